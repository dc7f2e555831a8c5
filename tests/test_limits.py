"""Limits on a real daemon: connections, queued requests per model, and what the
daemon buffers for a client that stops reading."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from helpers import DaemonProcess, RawConnection, wait_until

LIMITS = "max_connections = 4\nmax_queued_per_model = 2\nmax_client_buffer_bytes = 262144\n"


@pytest.fixture(scope="module")
def limited_daemon(tmp_path_factory: pytest.TempPathFactory):
    d = DaemonProcess(tmp_path_factory.mktemp("lim"), config=LIMITS, IMPETUS_PLUGINS="impetus_echo").start()
    yield d
    d.stop()


@pytest.fixture
def limited(limited_daemon: DaemonProcess) -> DaemonProcess:
    """The daemon once the connections of earlier tests are gone (closing is asynchronous)."""
    assert wait_until(lambda: _connections(limited_daemon) == 1, timeout=5)
    return limited_daemon


def _connections(d: DaemonProcess) -> int:
    try:
        with d.connect() as conn:
            return conn.read_or_call("daemon.health").get("result", {}).get("connections", -1)
    except OSError:
        return -1


def _chat(model: Path, text: str, **extra: object) -> dict:
    return {"model": str(model), "messages": [{"role": "user", "content": text}], **extra}


def _idle(d: DaemonProcess) -> bool:
    with d.connect() as conn:
        return conn.call("daemon.health")["result"]["in_flight"] == 0


def test_connections_over_the_limit_get_one_overloaded_line(limited: DaemonProcess) -> None:
    first = limited.connect()
    held = [first]
    try:  # wait (on this connection) until closed ones from before are no longer counted
        assert wait_until(lambda: first.call("daemon.health")["result"]["connections"] == 1, timeout=5)
        for _ in range(3):
            held.append(limited.connect())
            assert "result" in held[-1].call("daemon.health")
        assert first.call("daemon.health")["result"]["connections"] == 4
        extra = limited.connect()
        err = extra.read()["error"]
        assert err["code"] == -32003 and err["data"]["name"] == "Overloaded"
        assert err["data"]["limit"] == 4 and err["data"]["reason"] == "connections"
        assert extra.file.readline() == b""  # then closed
        extra.close()
        held.pop().close()
        assert wait_until(lambda: _try_health(limited), timeout=3)
    finally:
        for conn in held:
            conn.close()


def _try_health(d: DaemonProcess) -> bool:
    with d.connect() as conn:
        return "result" in conn.read_or_call("daemon.health")


def test_queue_limit_answers_overloaded_in_milliseconds(limited: DaemonProcess, tmp_path: Path) -> None:
    model = tmp_path / "slow.echo"
    model.write_text("0.1")
    words = " ".join(["w"] * 40)
    with limited.connect() as conn:
        conn.call("models.load", {"model": str(model)})
        running = conn.send("chat", _chat(model, words, stream=True))
        assert conn.read()["method"] == "chat.chunk"  # running in the worker
        queued = [conn.send("chat", _chat(model, "q")) for _ in range(2)]
        time.sleep(0.2)
        sent = time.monotonic()
        over = conn.send("chat", _chat(model, "one too many"))
        _, answer = conn.until_response(over)
        took_ms = (time.monotonic() - sent) * 1000
        err = answer["error"]
        assert err["data"]["name"] == "Overloaded" and err["data"]["limit"] == 2
        assert err["data"]["model"] == str(model) and err["data"]["reason"] == "queue"
        print(f"Overloaded answered in {took_ms:.1f} ms")
        assert took_ms < 250, took_ms
        conn.send("$/cancel", {"id": running}, notify=True)
        for rid in [running, *queued]:
            _, final = conn.until_response(rid)
            assert "result" in final
        # Room again once the queue has drained.
        assert conn.call("chat", _chat(model, "fits"))["result"]["message"]["content"] == "fits"


def test_a_client_that_stops_reading_is_dropped_and_others_are_not_slowed(limited: DaemonProcess, tmp_path: Path) -> None:
    flood = tmp_path / "flood.echo"
    flood.write_text("repeat = 20000\n")  # 200,000 words: ~13 MB of chunks
    other = tmp_path / "other.echo"
    other.write_text("0")
    words = " ".join(f"w{i}" for i in range(300))
    with limited.connect() as conn:
        conn.call("models.load", {"model": str(flood)})
        started = time.monotonic()
        baseline = conn.call("chat", _chat(other, words, stream=True))  # loads, then streams 300 chunks
        started = time.monotonic()
        conn.call("chat", _chat(other, words, stream=True))
        normal = time.monotonic() - started
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.connect(str(limited.socket))
    stalled.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "chat", "params": _chat(flood, " ".join(["x"] * 10), max_tokens=10**9, stream=True)}).encode() + b"\n")
    with limited.connect() as conn:
        times = []
        for _ in range(3):
            started = time.monotonic()
            rid = conn.send("chat", _chat(other, words, stream=True))
            notes, final = conn.until_response(rid)
            times.append(time.monotonic() - started)
            assert final["result"]["message"]["content"] == words and len(notes) == 300
        # The stalled client was dropped: its generation was cancelled, the worker is free.
        assert wait_until(lambda: _idle(limited), timeout=5)
        [flooder] = [m for m in conn.call("models.loaded")["result"]["models"] if m["name"] == str(flood)]
        assert flooder["in_flight"] == 0
    # What the stalled client can still read is bounded: kernel buffers plus the cap, then end of stream.
    stalled.settimeout(10)
    received = 0
    while chunk := stalled.recv(1 << 20):
        received += len(chunk)
    stalled.close()
    assert received < 262144 + 4 * 1024 * 1024, received
    assert "stopped reading" in limited.log.read_text()
    print(f"normal {normal:.3f} s; during the stall {times}")
    assert max(times) < max(5 * normal, 1.0), (normal, times)
    assert baseline  # the first call loaded the model
