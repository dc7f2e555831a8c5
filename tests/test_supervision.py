"""Supervision on a real daemon with real worker processes of the echo test plugin:
crashes, restart backoff, the circuit breaker, hung workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import DaemonProcess, pid_alive, wait_until

FAST = "restart_backoff_s = 0.05\ncrash_window_s = 30\nhung_timeout_s = 1.0\n"


@pytest.fixture
def sup_daemon(tmp_path_factory: pytest.TempPathFactory):
    d = DaemonProcess(tmp_path_factory.mktemp("sup"), config=FAST, IMPETUS_PLUGINS="impetus_echo").start()
    yield d
    d.stop()


def _echo(path: Path, **fields: object) -> Path:
    lines = [f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"' for k, v in fields.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _chat(text: str, model: Path, **extra: object) -> dict:
    return {"model": str(model), "messages": [{"role": "user", "content": text}], **extra}


def test_kill_9_mid_stream_fails_fast_and_names_model_and_signal(sup_daemon: DaemonProcess, tmp_path: Path) -> None:
    model = _echo(tmp_path / "slow.echo", delay_s=0.2)
    with sup_daemon.connect() as conn:
        pid = conn.call("models.load", {"model": str(model)})["result"]["model"]["pid"]
        rid = conn.send("chat", _chat(" ".join(["w"] * 50), model, stream=True))
        assert conn.read()["method"] == "chat.chunk"
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        _, final = conn.until_response(rid)
        elapsed = time.monotonic() - killed
        err = final["error"]
        assert err["code"] == 2002 and err["data"]["name"] == "WorkerCrashed"
        assert err["data"]["model"] == str(model) and err["data"]["pid"] == pid
        assert err["data"]["cause"] == "killed by signal SIGKILL"
        assert str(model) in err["message"] and "SIGKILL" in err["message"]
        assert elapsed < 1.0, f"the error took {elapsed:.2f} s"
        health = conn.call("daemon.health")["result"]
        assert health["status"] == "ok"  # one crash: recovering, not failed
        [failure] = health["failures"]
        assert failure["state"] == "recovering" and failure["last_cause"] == "killed by signal SIGKILL"
        again = conn.call("chat", _chat("still here", model))["result"]
        assert again["message"]["content"] == "still here"
        assert conn.call("models.loaded")["result"]["models"][0]["pid"] != pid


def test_repeated_crashes_open_the_circuit_without_a_restart_storm(sup_daemon: DaemonProcess, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    model = _echo(tmp_path / "crashy.echo", crash_after=1, pid_log=str(pids))
    errors = []
    with sup_daemon.connect() as conn:
        for _ in range(6):
            started = time.monotonic()
            errors.append((conn.call("chat", _chat("a b c", model))["error"], time.monotonic() - started))
        names = [e["data"]["name"] for e, _ in errors]
        assert names == ["WorkerCrashed"] * 5 + ["ModelFailed"], names
        refused, refused_in = errors[-1]
        assert refused["code"] == 1008 and refused["data"]["model"] == str(model)
        assert "killed by signal SIGKILL" in refused["data"]["reason"]
        assert refused_in < 0.5  # refused without starting anything
        # Backoff: each restart waited longer than the one before (0.05, 0.1, 0.2, 0.4 s
        # after the crash, less the moments until the next request came).
        waits = [float(line.rsplit(" in ", 1)[1].split(" s ", 1)[0])
                 for line in sup_daemon.log.read_text().splitlines() if "(backoff after a failure)" in line]
        assert len(waits) >= 3 and waits == sorted(waits) and 0.25 < waits[-1] <= 0.4, waits
        worker_pids = pids.read_text().split()
        assert len(worker_pids) == 5 and len(set(worker_pids)) == 5
        # More requests while failed: still no new worker.
        for _ in range(3):
            assert conn.call("chat", _chat("x", model))["error"]["data"]["name"] == "ModelFailed"
        assert len(pids.read_text().split()) == 5
        health = conn.call("daemon.health")["result"]
        assert health["status"] == "degraded"
        [failure] = health["failures"]
        assert failure["state"] == "failed" and failure["failures"] == 5 and failure["retry_after_s"] > 20
        assert conn.call("models.loaded")["result"]["failed"][0]["name"] == str(model)
        ps = subprocess.run([sys.executable, "-m", "impetusctl", "--no-autostart", "ps"], env=sup_daemon.env, capture_output=True, text=True, timeout=60)
        assert ps.returncode == 0 and f"FAILED {model}: 5 failure(s)" in ps.stdout, ps.stdout + ps.stderr
        # An explicit load forces a restart and closes the circuit.
        loaded = conn.call("models.load", {"model": str(model)})["result"]["model"]
        assert pid_alive(loaded["pid"]) and len(pids.read_text().split()) == 6
        assert conn.call("daemon.health")["result"]["status"] == "ok"
        assert conn.call("models.loaded")["result"]["failed"] == []


def test_hung_worker_is_killed_and_reported(sup_daemon: DaemonProcess, tmp_path: Path) -> None:
    model = _echo(tmp_path / "hangs.echo", hang_after=2)
    with sup_daemon.connect() as conn:
        pid = conn.call("models.load", {"model": str(model)})["result"]["model"]["pid"]
        rid = conn.send("chat", _chat("one two three four", model, stream=True))
        started = time.monotonic()
        notes, final = conn.until_response(rid)
        took = time.monotonic() - started
        assert [n["params"]["delta"] for n in notes] == ["one", " two"]
        err = final["error"]
        assert err["code"] == 2005 and err["data"]["name"] == "WorkerHung"
        assert err["data"]["model"] == str(model) and err["data"]["pid"] == pid
        assert 1.0 <= took < 4.0, took
        assert wait_until(lambda: not pid_alive(pid), timeout=3)
        [failure] = conn.call("daemon.health")["result"]["failures"]
        assert failure["hangs"] == 1 and failure["last_cause"].startswith("hung")
        # A slow but steady worker is not hung: words every 0.4 s for 2.4 s (> hung_timeout_s).
        steady = _echo(tmp_path / "steady.echo", delay_s=0.4)
        result = conn.call("chat", _chat("a b c d e f", steady))["result"]
        assert result["finish_reason"] == "stop"


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_crash_history_backoff_doubles_and_circuit_closes_after_the_window() -> None:
    from impetusd.residency.crashes import CrashHistory

    clock = _Clock()
    h = CrashHistory(limit=3, window_s=60, backoff_s=0.5, backoff_max_s=1.5, clock=clock)
    assert h.backoff_left() == 0 and not h.is_open()
    h.record("exit code 1")
    assert h.backoff_left() == pytest.approx(0.5)
    h.record("exit code 1")
    assert h.backoff_left() == pytest.approx(1.0)
    clock.now += 0.25
    assert h.backoff_left() == pytest.approx(0.75)
    h.record("killed by signal SIGSEGV")
    assert h.backoff_left() == pytest.approx(1.5)  # capped
    assert h.is_open() and h.describe("m").state == "failed"
    assert h.describe("m").reason == "3 failure(s) in 60 s; last: killed by signal SIGSEGV"
    clock.now += 59
    assert h.is_open() and h.retry_after() == pytest.approx(1.0)
    clock.now += 1.5
    assert not h.is_open() and h.recent() == 0 and h.backoff_left() == 0
    # Failures spread wider than the window never open it.
    for _ in range(5):
        h.record("exit code 1")
        clock.now += 31
    assert not h.is_open() and h.recent() == 1
    h.reset()
    assert h.recent() == 0 and h.total == 8


def test_allocation_failure_unloads_idle_models_and_retries_once(sup_daemon: DaemonProcess, tmp_path: Path) -> None:
    idle = _echo(tmp_path / "idle.echo", delay_s=0.0)
    once = _echo(tmp_path / "tight.echo", memory_errors=1)
    never = _echo(tmp_path / "toobig.echo", memory_errors=2)
    with sup_daemon.connect() as conn:
        idle_pid = conn.call("models.load", {"model": str(idle)})["result"]["model"]["pid"]
        result = conn.call("chat", _chat("fits after all", once))["result"]
        assert result["message"]["content"] == "fits after all"
        loaded = [m["name"] for m in conn.call("models.loaded")["result"]["models"]]
        assert str(idle) not in loaded and str(once) in loaded
        assert wait_until(lambda: not pid_alive(idle_pid), timeout=5)
        err = conn.call("chat", _chat("no chance", never))["error"]
        assert err["code"] == 2006 and err["data"]["name"] == "InsufficientMemory"
        assert err["data"]["model"] == str(never) and err["data"]["retried"] is True
        assert err["data"]["unloaded"] == [str(once)]  # the idle one went first
        # The worker survived both failures and serves the next request.
        assert conn.call("chat", _chat("now", never))["result"]["message"]["content"] == "now"


def test_allocation_failures_are_recognised() -> None:
    from impetusd.workers.failures import backend_failure, is_allocation_failure

    assert is_allocation_failure(MemoryError())
    assert is_allocation_failure(RuntimeError("[metal::malloc] Attempting to allocate 9 bytes which is greater than the maximum"))
    assert not is_allocation_failure(RuntimeError("shape mismatch"))
    assert backend_failure(RuntimeError("[malloc] Unable to allocate 4 bytes")).name == "InsufficientMemory"
    assert backend_failure(ValueError("nope")).name == "GenerationFailed"


def test_sigterm_drains_a_running_request_then_exits_cleanly(daemon: DaemonProcess, slow_echo_model: Path) -> None:
    with daemon.connect() as conn:
        worker = conn.call("models.load", {"model": str(slow_echo_model)})["result"]["model"]["pid"]
        rid = conn.send("chat", _chat("one two three four five", slow_echo_model, stream=True))
        assert conn.read()["method"] == "chat.chunk"
        daemon.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert wait_until(lambda: not daemon.socket.exists(), timeout=3)  # no new connections
        _, final = conn.until_response(rid)
        assert final["result"]["message"]["content"] == "one two three four five"
        assert final["result"]["finish_reason"] == "stop"
    assert daemon.proc.wait(30) == 0  # type: ignore[union-attr]
    assert wait_until(lambda: not pid_alive(worker), timeout=5)


def test_oom_hint_only_for_sigkill_with_evidence() -> None:
    from impetusd.workers.oom import MemoryWatch, oom_kill_count

    watch = MemoryWatch(os.getpid())
    watch.sample()  # a real sample of this process and this machine
    assert watch.available_fraction is not None and 0 < watch.available_fraction <= 1
    assert watch.hint(-signal.SIGSEGV) is None and watch.hint(3) is None
    if watch.available_fraction > 0.05 and watch.worker_fraction < 0.5 and oom_kill_count() == watch.kills_at_start:
        assert watch.hint(-signal.SIGKILL) is None  # a plain kill -9 is not blamed on memory
    watch.available_fraction = 0.01  # as sampled on a machine that was out of memory
    assert watch.hint(-signal.SIGKILL).startswith("possibly killed by the OS for memory")
    if watch.kills_at_start is not None:
        watch.kills_at_start -= 1  # the cgroup's OOM-kill count rose while the worker lived
        assert watch.hint(-signal.SIGKILL) == "killed by the OS for memory (the memory cgroup's OOM-kill count rose)"
