"""The wire protocol, on a real daemon over its real socket."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

from helpers import DaemonProcess, maps_mention, wait_until
from impetusd.engine.backend import SAMPLING_CAPABILITIES
from impetusd.protocol.api import ChatParams, CompleteParams, ResolvedSampling, Sampling


def test_daemon_info_answers(shared_daemon: DaemonProcess) -> None:
    with shared_daemon.connect() as conn:
        info = conn.call("daemon.info")["result"]
    assert info["pid"] == shared_daemon.pid
    assert info["socket"] == str(shared_daemon.socket)
    assert {"chat", "complete", "models.load", "daemon.describe", "echo.ping"} <= set(info["methods"])
    assert "gguf" in info["formats"] and "mlx" in info["backends"]
    assert info["hardware"]["psutil"]["memory_total_bytes"] > 0


def test_garbage_line_gets_parse_error_and_connection_survives(shared_daemon: DaemonProcess) -> None:
    with shared_daemon.connect() as conn:
        conn.send_line(b"this is {not json")
        err = conn.read()
        assert err["id"] is None
        assert err["error"]["code"] == -32700
        assert err["error"]["data"]["name"] == "ParseError"
        assert conn.call("daemon.health")["result"]["status"] == "ok"


def test_invalid_request_keeps_its_id(shared_daemon: DaemonProcess) -> None:
    with shared_daemon.connect() as conn:
        conn.send_line(b'{"jsonrpc": "2.0", "id": 41}')
        err = conn.read()
        assert err["id"] == 41 and err["error"]["code"] == -32600
        conn.send_line(b'{"jsonrpc": "1.0", "id": 42, "method": "daemon.info"}')
        assert conn.read()["error"]["code"] == -32600


def test_unknown_method(shared_daemon: DaemonProcess) -> None:
    with shared_daemon.connect() as conn:
        err = conn.call("models.frobnicate")["error"]
    assert err["code"] == -32601
    assert err["data"] == {"name": "MethodNotFound", "method": "models.frobnicate"}


def test_wrong_param_type_names_the_field(shared_daemon: DaemonProcess) -> None:
    with shared_daemon.connect() as conn:
        err = conn.call("chat", {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"})["error"]
        assert err["code"] == -32602
        assert err["data"]["field"] == "max_tokens"
        assert "max_tokens" in err["message"]
        nested = conn.call("chat", {"model": "m", "messages": [{"role": "wizard", "content": "hi"}]})["error"]
        assert nested["code"] == -32602 and nested["data"]["field"] == "messages[0].role"
        unknown = conn.call("chat", {"model": "m", "messages": [], "mirostat": 1})["error"]
        assert unknown["code"] == -32602 and unknown["data"]["field"] == "mirostat"


def test_batch_answers_each_request_and_skips_notifications(shared_daemon: DaemonProcess) -> None:
    with shared_daemon.connect() as conn:
        batch = [
            {"jsonrpc": "2.0", "id": "a", "method": "daemon.health"},
            {"jsonrpc": "2.0", "method": "daemon.health"},
            {"jsonrpc": "2.0", "id": "b", "method": "nope"},
            5,
        ]
        conn.send_line(json.dumps(batch).encode())
        answer = conn.read()
        assert isinstance(answer, list) and len(answer) == 3
        by_id = {a["id"]: a for a in answer}
        assert by_id["a"]["result"]["status"] == "ok"
        assert by_id["b"]["error"]["code"] == -32601
        assert by_id[None]["error"]["code"] == -32600
        conn.send_line(b"[]")
        assert conn.read()["error"]["code"] == -32600


def test_notification_gets_no_answer(shared_daemon: DaemonProcess) -> None:
    with shared_daemon.connect() as conn:
        conn.send("daemon.health", notify=True)
        conn.send("$/cancel", {"id": 12345}, notify=True)
        rid = conn.send("daemon.info")
        first = conn.read()
        assert first["id"] == rid and "result" in first


def test_describe_has_a_schema_for_every_method(shared_daemon: DaemonProcess) -> None:
    with shared_daemon.connect() as conn:
        info = conn.call("daemon.info")["result"]
        desc = conn.call("daemon.describe")["result"]
    assert set(desc["methods"]) == set(info["methods"])
    chat = desc["methods"]["chat"]
    params = desc["components"][chat["params"]["$ref"].rsplit("/", 1)[1]]
    assert {"model", "messages", "max_tokens", "temperature", "stop", "seed", "stream"} <= set(params["properties"])
    assert chat["streams"] is True
    for name, method in desc["methods"].items():
        assert method["description"], f"{name} is undocumented"


def test_oversized_line_is_refused_and_connection_closed(tmp_path_factory) -> None:
    d = DaemonProcess(tmp_path_factory.mktemp("cap"), IMPETUS_MAX_LINE_BYTES="4096").start()
    try:
        with d.connect() as conn:
            conn.sock.sendall(b'{"jsonrpc":"2.0","id":1,"method":"daemon.info","params":"' + b"x" * 100_000)
            err = conn.read()
            assert err["error"]["data"]["name"] == "MessageTooLarge"
            assert err["error"]["data"]["limit"] == 4096
            assert conn.file.readline() == b""  # closed by the daemon
        with d.connect() as conn:  # the daemon still serves everyone else
            assert conn.call("daemon.health")["result"]["status"] == "ok"
    finally:
        assert d.stop() == 0


def test_socket_and_directory_modes(shared_daemon: DaemonProcess) -> None:
    assert stat.S_IMODE(shared_daemon.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(shared_daemon.socket.parent.stat().st_mode) == 0o700
    assert stat.S_ISSOCK(shared_daemon.socket.stat().st_mode)


def test_second_daemon_refuses_to_start(shared_daemon: DaemonProcess) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "impetusd"], env=shared_daemon.env, capture_output=True, text=True, timeout=30
    )
    assert second.returncode != 0
    assert "already running" in second.stderr
    with shared_daemon.connect() as conn:
        assert conn.call("daemon.health")["result"]["status"] == "ok"


def test_stale_socket_is_replaced(tmp_path_factory) -> None:
    root = tmp_path_factory.mktemp("stale")
    d = DaemonProcess(root)
    d.socket.parent.mkdir(parents=True, mode=0o700)
    import socket as s

    leftover = s.socket(s.AF_UNIX)
    leftover.bind(str(d.socket))  # a socket file nobody listens on
    leftover.close()
    d.start()
    with d.connect() as conn:
        assert conn.call("daemon.info")["result"]["pid"] == d.pid
    assert d.stop() == 0
    assert not d.socket.exists()


def test_shutdown_method_stops_cleanly(daemon: DaemonProcess) -> None:
    with daemon.connect() as conn:
        assert conn.call("daemon.shutdown")["result"] == {"stopping": True}
    assert daemon.proc is not None and daemon.proc.wait(30) == 0
    assert not daemon.socket.exists()


def test_daemon_does_not_import_mlx_without_a_model(shared_daemon: DaemonProcess) -> None:
    with shared_daemon.connect() as conn:
        conn.call("models.list")
        conn.call("daemon.info")
    assert not maps_mention(shared_daemon.pid, "libmlx")
    assert not maps_mention(shared_daemon.pid, "/mlx/")


def test_sigint_also_stops_cleanly(daemon: DaemonProcess) -> None:
    import signal

    assert daemon.stop(signal.SIGINT) == 0
    assert wait_until(lambda: not daemon.socket.exists())


def test_raw_client_without_helpers(shared_daemon: DaemonProcess) -> None:
    """What the README's raw-socket example does, with only the standard library."""
    import socket as s

    sock = s.socket(s.AF_UNIX, s.SOCK_STREAM)
    sock.connect(str(shared_daemon.socket))
    sock.sendall(b'{"jsonrpc":"2.0","id":1,"method":"daemon.health"}\n')
    reply = json.loads(sock.makefile().readline())
    sock.close()
    assert reply["result"]["status"] == "ok"


def test_deeply_nested_lines_are_parse_errors_not_crashes(shared_daemon: DaemonProcess) -> None:
    depth = 100_000
    with shared_daemon.connect() as conn:
        conn.send_line(b"[" * depth + b"]" * depth)
        assert conn.read()["error"]["data"]["name"] == "ParseError"
        conn.send_line(b'{"jsonrpc":"2.0","id":7,"method":"chat","params":' + b"[" * depth + b"]" * depth + b"}")
        err = conn.read()  # too deep even to skip over as raw params
        assert err["id"] is None and err["error"]["data"]["name"] == "ParseError"
        conn.send_line(b'{"jsonrpc":"2.0","id":9,"method":"chat","params":{"model":' + b"[" * 200 + b"]" * 200 + b"}}")
        err = conn.read()
        assert err["id"] == 9 and err["error"]["data"]["name"] == "InvalidParams"
        conn.send_line(b'{"jsonrpc":"2.0","id":8,"method":' + b"{" * 10 + b"}")
        assert conn.read()["error"]["data"]["name"] == "InvalidRequest"  # method is not a string
        conn.send_line(b'{"jsonrpc":"2.0","method":"$/cancel","params":{"id":' + b"[" * depth + b"]" * depth + b"}}")
        assert conn.call("daemon.health")["result"]["status"] == "ok"
    assert shared_daemon.proc is not None and shared_daemon.proc.poll() is None


def test_the_sampling_fields_are_named_once() -> None:
    """chat and complete inherit Sampling's fields, each is a capability name, and the
    resolved form an engine gets gives every one a value (seed: None, a random one)."""
    fields = Sampling.__struct_fields__
    assert set(fields) <= set(ChatParams.__struct_fields__) & set(CompleteParams.__struct_fields__)
    assert ResolvedSampling.__struct_fields__ == fields and SAMPLING_CAPABILITIES == set(fields)
    assert [name for name in fields if getattr(ResolvedSampling(), name) is None] == ["seed"]
