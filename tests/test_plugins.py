"""A third-party plugin (tests/plugins/impetus_echo.py) used end to end through the socket,
plus the worker lifecycle and cancellation it makes quick to observe."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from helpers import DaemonProcess, pid_alive, wait_until
from impetusd.protocol.errors import PluginError
from impetusd.plugin.manager import build_registries, make_plugin_manager


def test_third_party_method_is_served(shared_daemon: DaemonProcess) -> None:
    with shared_daemon.connect() as conn:
        result = conn.call("echo.ping", {"text": "hello"})["result"]
        assert result == {"text": "echo: hello", "pid": shared_daemon.pid}
        bad = conn.call("echo.ping", {"text": 3})["error"]
        assert bad["code"] == -32602 and bad["data"]["field"] == "text"


def test_third_party_backend_streams_from_its_own_worker(shared_daemon: DaemonProcess, echo_model: Path) -> None:
    with shared_daemon.connect() as conn:
        rid = conn.send("chat", {"model": str(echo_model), "messages": [{"role": "user", "content": "one two three"}], "stream": True})
        notes, final = conn.until_response(rid)
        loaded = conn.call("models.loaded")["result"]["models"]
    deltas = [n["params"]["delta"] for n in notes if n["method"] == "chat.chunk"]
    assert all(n["params"]["id"] == rid for n in notes)
    assert deltas == ["one", " two", " three"]
    result = final["result"]
    assert result["message"] == {"role": "assistant", "content": "one two three"}
    assert result["backend"] == "echo" and result["finish_reason"] == "stop"
    assert result["usage"]["completion_tokens"] == 3
    [entry] = [m for m in loaded if m["name"] == str(echo_model.resolve())]
    assert entry["pid"] != shared_daemon.pid and pid_alive(entry["pid"])


def test_unsupported_parameter_is_refused_by_name(shared_daemon: DaemonProcess, echo_model: Path) -> None:
    with shared_daemon.connect() as conn:
        for param, value in (("top_k", 5), ("seed", 1), ("min_p", 0.1)):
            err = conn.call("chat", {"model": str(echo_model), "messages": [{"role": "user", "content": "x"}], param: value})["error"]
            assert err["data"]["name"] == "UnsupportedParameter"
            assert err["data"]["param"] == param and err["data"]["backend"] == "echo"
            assert err["code"] == 2001


def test_bad_values_and_missing_models_are_typed(shared_daemon: DaemonProcess, echo_model: Path) -> None:
    with shared_daemon.connect() as conn:
        err = conn.call("chat", {"model": str(echo_model), "messages": [{"role": "user", "content": "x"}], "temperature": -1})["error"]
        assert err["code"] == -32602 and err["data"]["field"] == "temperature"
        err = conn.call("chat", {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]})["error"]
        assert err["data"]["name"] == "ModelNotFound" and err["data"]["model"] == "no-such-model"
        err = conn.call("models.unload", {"model": "no-such-model"})["error"]
        assert err["data"]["name"] == "ModelNotLoaded"
        err = conn.call("models.load", {"model": str(echo_model), "backend": "mlx"})["error"]
        assert err["data"]["name"] == "NoBackend"


def test_cancel_stops_generation_with_cancelled(shared_daemon: DaemonProcess, slow_echo_model: Path) -> None:
    words = " ".join(f"w{i}" for i in range(50))
    with shared_daemon.connect() as conn:
        conn.call("models.load", {"model": str(slow_echo_model)})
        rid = conn.send("chat", {"model": str(slow_echo_model), "messages": [{"role": "user", "content": words}], "stream": True})
        first = conn.read()
        assert first["method"] == "chat.chunk"
        started = time.monotonic()
        conn.send("$/cancel", {"id": rid}, notify=True)
        _, final = conn.until_response(rid)
        assert time.monotonic() - started < 2.0
        result = final["result"]
        assert result["finish_reason"] == "cancelled"
        assert 1 <= result["usage"]["completion_tokens"] < 50
        assert conn.call("daemon.health")["result"]["in_flight"] == 0


def test_disconnect_cancels_in_flight_work(shared_daemon: DaemonProcess, slow_echo_model: Path) -> None:
    words = " ".join(f"w{i}" for i in range(100))  # 20 s if nobody stops it
    conn = shared_daemon.connect()
    conn.send("chat", {"model": str(slow_echo_model), "messages": [{"role": "user", "content": words}], "stream": True})
    assert conn.read()["method"] == "chat.chunk"
    conn.close()
    with shared_daemon.connect() as watcher:

        def idle() -> bool:
            health = watcher.call("daemon.health")["result"]
            models = watcher.call("models.loaded")["result"]["models"]
            return health["in_flight"] == 0 and all(m["in_flight"] == 0 for m in models)

        assert wait_until(idle, timeout=3.0)
        # The worker is free again: a new request is answered at once.
        rid = watcher.send("chat", {"model": str(slow_echo_model), "messages": [{"role": "user", "content": "done"}]})
        _, final = watcher.until_response(rid)
        assert final["result"]["message"]["content"] == "done"


def test_unload_ends_the_worker_process(daemon: DaemonProcess, echo_model: Path) -> None:
    with daemon.connect() as conn:
        pid = conn.call("models.load", {"model": str(echo_model)})["result"]["model"]["pid"]
        assert pid_alive(pid)
        again = conn.call("models.load", {"model": str(echo_model)})["result"]
        assert again["already_loaded"] is True and again["model"]["pid"] == pid
        assert conn.call("models.unload", {"model": str(echo_model)})["result"]["pid"] == pid
        assert wait_until(lambda: not pid_alive(pid), timeout=5)
        assert conn.call("models.loaded")["result"]["models"] == []


def test_keep_alive_zero_unloads_after_the_request(daemon: DaemonProcess, echo_model: Path) -> None:
    with daemon.connect() as conn:
        pid = conn.call("models.load", {"model": str(echo_model)})["result"]["model"]["pid"]
        conn.call("chat", {"model": str(echo_model), "messages": [{"role": "user", "content": "bye"}], "keep_alive": 0})
        assert wait_until(lambda: not pid_alive(pid), timeout=5)
        assert conn.call("models.loaded")["result"]["models"] == []


def test_no_orphan_worker_after_daemon_kill_9(daemon: DaemonProcess, echo_model: Path) -> None:
    with daemon.connect() as conn:
        pid = conn.call("models.load", {"model": str(echo_model)})["result"]["model"]["pid"]
    daemon.stop(signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(pid), timeout=5), "worker outlived a kill -9 of the daemon"


def test_worker_killed_mid_request_gives_typed_error(daemon: DaemonProcess, slow_echo_model: Path) -> None:
    import os

    with daemon.connect() as conn:
        pid = conn.call("models.load", {"model": str(slow_echo_model)})["result"]["model"]["pid"]
        rid = conn.send("chat", {"model": str(slow_echo_model), "messages": [{"role": "user", "content": "a b c d e f g h"}], "stream": True})
        conn.read()
        os.kill(pid, signal.SIGKILL)
        _, final = conn.until_response(rid)
        err = final["error"]
        assert err["data"]["name"] == "WorkerCrashed"
        assert err["data"]["cause"] == "killed by signal SIGKILL"
        assert conn.call("daemon.health")["result"]["status"] == "ok"
        # The next request starts a new worker.
        again = conn.call("chat", {"model": str(slow_echo_model), "messages": [{"role": "user", "content": "ok"}]})
        assert again["result"]["message"]["content"] == "ok"


class _UnknownHook:
    @staticmethod
    def impetus_no_such_hook() -> None: ...


def test_unknown_hook_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    module = types.ModuleType("impetus_bad_plugin")
    from impetusd.plugin.hookspecs import hookimpl

    module.impetus_no_such_hook = hookimpl(lambda: None)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "impetus_bad_plugin", module)
    with pytest.raises(PluginError, match="unknown hook"):
        make_plugin_manager(["impetus_bad_plugin"])


def test_builtin_plugins_arrive_through_entry_points() -> None:
    pm = make_plugin_manager()
    regs = build_registries(pm)
    assert "gguf" in regs.formats and "mlx" in regs.backends and "psutil" in regs.monitors
    assert {"safetensors", "mlx", "pytorch-pickle"} <= set(regs.formats.names())
    names = {name for name, _ in pm.list_name_plugin()}
    assert {"gguf", "safetensors", "mlx", "psutil"} <= names  # entry-point names, as a third party's would be


def test_sigterm_past_the_grace_period_cancels_with_a_typed_error(tmp_path_factory, slow_echo_model: Path) -> None:
    root = tmp_path_factory.mktemp("grace")
    (root / "home").mkdir()
    (root / "home" / "config.toml").write_text("shutdown_grace_s = 0.5\n")
    d = DaemonProcess(root, IMPETUS_PLUGINS="impetus_echo").start()
    words = " ".join(f"w{i}" for i in range(100))  # 20 s of output
    with d.connect() as conn:
        worker = conn.call("models.load", {"model": str(slow_echo_model)})["result"]["model"]["pid"]
        rid = conn.send("chat", {"model": str(slow_echo_model), "messages": [{"role": "user", "content": words}], "stream": True})
        assert conn.read()["method"] == "chat.chunk"
        started = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        _, final = conn.until_response(rid)
        assert final["error"]["data"]["name"] == "ShuttingDown"
        assert final["error"]["code"] == -32002
    assert d.proc.wait(30) == 0  # type: ignore[union-attr]
    assert time.monotonic() - started < 10
    assert not d.socket.exists()
    assert wait_until(lambda: not pid_alive(worker), timeout=5)
