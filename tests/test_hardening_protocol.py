"""Protocol and transport defects found by attacking a real daemon from outside
(issue 14): batch amplification, per-connection work in flight, half-closed
clients, ``$/cancel`` with an id, duplicate ids, lone surrogates."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from helpers import DaemonProcess

LIMITS = "max_batch_items = 50\nmax_requests_per_connection = 4\n"


@pytest.fixture(scope="module")
def hd(tmp_path_factory: pytest.TempPathFactory):
    d = DaemonProcess(tmp_path_factory.mktemp("hard"), config=LIMITS, IMPETUS_PLUGINS="impetus_echo").start()
    yield d
    d.stop()


def _chat(model: Path, text: str, rid: int, **extra: object) -> dict:
    params = {"model": str(model), "messages": [{"role": "user", "content": text}], **extra}
    return {"jsonrpc": "2.0", "id": rid, "method": "chat", "params": params}


def _line(msg: object) -> bytes:
    return json.dumps(msg).encode() + b"\n"


# --- 1. batches and work in flight ---------------------------------------------


def test_a_huge_batch_is_refused_at_once_naming_the_limit_and_memory_stays_bounded(hd: DaemonProcess) -> None:
    proc = psutil.Process(hd.pid)
    before = proc.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with hd.connect() as conn:
            started = time.monotonic()
            conn.send_line(b"[" + b"1," * 299_999 + b"1]")  # 600 KB, 300,000 items
            answer = conn.read()
            took = time.monotonic() - started
            assert isinstance(answer, dict), "one error, not an array of 300,000 answers"
            err = answer["error"]
            assert err["data"]["name"] == "InvalidRequest" and err["data"]["limit"] == 50
            assert "50" in err["message"] and "max_batch_items" in err["message"]
            assert answer["id"] is None
            assert took < 2.0
            assert "result" in conn.call("daemon.health")  # the connection goes on
    finally:
        done.set()
        sampler.join()
    assert peak[0] - before < 60_000_000, f"RSS grew {(peak[0] - before) / 1e6:.0f} MB for a 600 KB line"


def test_a_batch_at_the_limit_is_answered_whole(hd: DaemonProcess) -> None:
    items = [{"jsonrpc": "2.0", "id": i, "method": "daemon.health"} for i in range(50)]
    with hd.connect() as conn:
        conn.send_line(json.dumps(items).encode())
        answer = conn.read()
    assert sorted(a["id"] for a in answer) == list(range(50))
    assert all("result" in a for a in answer)


def test_requests_in_flight_per_connection_are_bounded_by_not_reading(hd: DaemonProcess, tmp_path: Path) -> None:
    model = tmp_path / "slow.echo"
    model.write_text("0.05")
    with hd.connect() as warm:
        assert "result" in warm.call("models.load", {"model": str(model)})
    batch = [_chat(model, "a b c d", i) for i in range(10)]
    singles = b"".join(_line(_chat(model, "a b c d", 100 + i)) for i in range(10))
    seen: list[int] = []
    answered: set[int] = set()
    with hd.connect() as conn, hd.connect() as watcher:

        def collect() -> None:
            while len(answered) < 20:
                msg = conn.read()
                if isinstance(msg, list):
                    answered.update(a["id"] for a in msg if "result" in a)
                elif "result" in msg:
                    answered.add(msg["id"])

        reader = threading.Thread(target=collect, daemon=True)
        reader.start()
        conn.send_line(json.dumps(batch).encode())
        conn.sock.sendall(singles)
        deadline = time.monotonic() + 60
        while reader.is_alive() and time.monotonic() < deadline:
            seen.append(watcher.call("daemon.health")["result"]["in_flight"])
        reader.join(1)
        assert answered == set(range(10)) | set(range(100, 110))
    # The watcher's own daemon.health counts itself.
    assert max(seen) <= 4 + 1, f"in flight on one connection: {max(seen) - 1} (limit 4)"


# --- 4. half-close ---------------------------------------------------------------


def _half_closed(hd: DaemonProcess, data: bytes) -> list[dict]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(hd.socket))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return [json.loads(line) for line in out.splitlines()]


def test_a_client_that_half_closes_gets_its_answers_then_eof(hd: DaemonProcess, tmp_path: Path) -> None:
    model = tmp_path / "echo.echo"
    model.write_text("0.02")
    info = _half_closed(hd, b'{"jsonrpc":"2.0","id":1,"method":"daemon.info"}\n')
    assert [m["id"] for m in info] == [1] and "methods" in info[0]["result"]
    msgs = _half_closed(hd, _line(_chat(model, "one two three", 7, stream=True)) + _line({"jsonrpc": "2.0", "id": 8, "method": "complete", "params": {"model": str(model), "prompt": "x y"}}))
    chunks = [m for m in msgs if m.get("method") == "chat.chunk"]
    assert len(chunks) >= 3
    final = {m["id"]: m for m in msgs if "id" in m}
    assert final[7]["result"]["message"]["content"].split() == ["one", "two", "three"]
    assert "result" in final[8]


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat not installed")
def test_the_readme_socat_example_answers(hd: DaemonProcess, tmp_path: Path) -> None:
    model = tmp_path / "echo.echo"
    model.write_text("0")
    for request in (b'{"jsonrpc":"2.0","id":1,"method":"daemon.info"}\n', _line(_chat(model, "hi there", 1))):
        out = subprocess.run(["socat", "-t", "30", "-", f"UNIX-CONNECT:{hd.socket}"], input=request, capture_output=True, timeout=60).stdout
        msgs = [json.loads(line) for line in out.splitlines()]
        assert msgs and msgs[-1]["id"] == 1 and "result" in msgs[-1], out


def test_a_client_that_disconnects_fully_still_cancels_its_work(hd: DaemonProcess, tmp_path: Path) -> None:
    model = tmp_path / "slow.echo"
    model.write_text("0.2")
    with hd.connect() as conn:  # loaded first, so the chat below is generating when its client leaves
        assert "result" in conn.call("chat", {"model": str(model), "messages": [{"role": "user", "content": "w"}]})
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(hd.socket))
        s.sendall(_line(_chat(model, " ".join(["w"] * 200), 1)))  # not streamed: nothing is written to it
        with hd.connect() as conn:
            deadline = time.monotonic() + 5
            while conn.call("daemon.health")["result"]["in_flight"] == 0:
                assert time.monotonic() < deadline, "the chat did not start"
                time.sleep(0.02)
    left = time.monotonic()
    with hd.connect() as conn:
        while conn.call("daemon.health")["result"]["in_flight"] > 0:  # daemon.* requests are not counted
            assert time.monotonic() - left < 2.0, "the abandoned chat kept running"
            time.sleep(0.02)


def test_a_client_that_disconnects_while_its_model_loads_leaves_no_worker(tmp_path: Path) -> None:
    model = tmp_path / "slow-load.echo"
    model.write_text("load_s = 30.0\n")
    d = DaemonProcess(tmp_path, IMPETUS_PLUGINS="impetus_echo").start()
    daemon = psutil.Process(d.pid)
    try:
        with d.connect() as conn:
            conn.send("chat", {"model": str(model), "messages": [{"role": "user", "content": "hi"}]})
            deadline = time.monotonic() + 20
            while not daemon.children():
                assert time.monotonic() < deadline, "the worker did not start"
                time.sleep(0.05)
            worker = daemon.children()[0].pid
            time.sleep(0.5)  # it is loading
        deadline = time.monotonic() + 5
        while psutil.pid_exists(worker) and psutil.Process(worker).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the worker of the abandoned load is still running"
            time.sleep(0.05)
        started = time.monotonic()
        assert d.stop(timeout=15) == 0
        assert time.monotonic() - started < 5, "shutdown waited for the abandoned worker"
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()


# --- 6. $/cancel with an id, duplicate ids, lone surrogates ----------------------


def test_cancel_sent_as_a_request_is_answered_and_cancels(hd: DaemonProcess, tmp_path: Path) -> None:
    model = tmp_path / "slow.echo"
    model.write_text("0.1")
    with hd.connect() as conn:
        conn.send_line(_line(_chat(model, " ".join(["w"] * 100), 5, stream=True)).rstrip())
        assert conn.read()["method"] == "chat.chunk"
        conn.send_line(b'{"jsonrpc":"2.0","id":6,"method":"$/cancel","params":{"id":5}}')
        answers: dict[int, dict] = {}
        while len(answers) < 2:
            msg = conn.read()
            if "id" in msg:
                answers[msg["id"]] = msg
        assert answers[6]["result"] == {"cancelled": True}
        assert answers[5]["result"]["finish_reason"] == "cancelled"
        assert conn.call("$/cancel", {"id": 12345})["result"] == {"cancelled": False}
        bad = conn.call("$/cancel", {"id": [1]})["error"]
        assert bad["data"]["name"] == "InvalidParams"


def test_a_duplicate_in_flight_id_is_refused_naming_the_id(hd: DaemonProcess, tmp_path: Path) -> None:
    model = tmp_path / "slow.echo"
    model.write_text("0.1")
    with hd.connect() as conn:
        conn.send_line(_line(_chat(model, "a b c d e f", "dup", stream=True)).rstrip())
        assert conn.read()["method"] == "chat.chunk"
        conn.send_line(_line(_chat(model, "x", "dup")).rstrip())
        msg = conn.read()
        while msg.get("method") == "chat.chunk":
            msg = conn.read()
        err = msg["error"]
        assert msg["id"] == "dup" and err["data"]["name"] == "InvalidRequest"
        assert "dup" in err["message"] and err["data"]["id"] == "dup"
        # The first one can still be cancelled by its id, and finishes.
        conn.send("$/cancel", {"id": "dup"}, notify=True)
        _, final = conn.until_response("dup")
        assert final["result"]["finish_reason"] == "cancelled"
        # Once it is over, the id may be used again.
        conn.send_line(b'{"jsonrpc":"2.0","id":"dup","method":"daemon.health"}')
        assert "result" in conn.until_response("dup")[1]


@pytest.mark.parametrize(
    "line",
    [
        rb'{"jsonrpc":"2.0","id":41,"method":"echo.ping","params":{"text":"\ud800"}}',
        rb'{"jsonrpc":"2.0","method":"chat","params":{"model":"m","messages":[{"role":"user","content":"a\udfffb"}]},"id":"s-41"}',
    ],
)
def test_a_lone_surrogate_gets_an_error_that_keeps_the_id(hd: DaemonProcess, line: bytes) -> None:
    rid = 41 if b'"id":41' in line else "s-41"
    with hd.connect() as conn:
        conn.send_line(line)
        msg = conn.read()
        assert msg["id"] == rid
        err = msg["error"]
        assert err["data"]["name"] == "InvalidRequest"
        assert "surrogate" in err["message"] and "truncated" not in err["message"]
        conn.send_line(b"[" + line + b"]")
        (item,) = conn.read()
        assert item["id"] == rid and "surrogate" in item["error"]["message"]
    # A proper pair is fine.
    with hd.connect() as conn:
        conn.send_line(rb'{"jsonrpc":"2.0","id":1,"method":"echo.ping","params":{"text":"\ud83d\ude00"}}')
        assert conn.read()["result"]["text"] == "echo: \U0001f600"

