"""``events.subscribe`` and ``hardware.snapshot`` on a real daemon."""

from __future__ import annotations

import time
from pathlib import Path

from helpers import DaemonProcess


def test_subscriber_sees_model_and_request_events_until_cancelled(daemon: DaemonProcess, echo_model: Path) -> None:
    with daemon.connect() as watcher, daemon.connect() as user:
        rid = watcher.send("events.subscribe", {"topics": ["model", "request"]})
        time.sleep(0.2)  # subscribed before the work starts
        reply = user.call("chat", {"model": str(echo_model), "messages": [{"role": "user", "content": "a b c"}]})
        assert reply["result"]["message"]["content"] == "a b c"
        user.call("models.unload", {"model": str(echo_model)})
        kinds: list[str] = []
        finished = None
        while "model.unloaded" not in kinds:
            msg = watcher.read()
            assert msg["method"] == "events.event" and msg["params"]["id"] == rid
            event = msg["params"]["event"]
            kinds.append(event["kind"])
            if event["kind"] == "request.finished":
                finished = event
        assert kinds == ["model.loading", "model.loaded", "request.finished", "model.unloaded"]
        assert finished is not None and finished["model"] == str(echo_model.resolve())
        assert finished["data"]["usage"]["completion_tokens"] == 3 and "total_ms" in finished["data"]["timings"]
        watcher.send("$/cancel", {"id": rid}, notify=True)
        _, final = watcher.until_response(rid)
        assert final["result"] == {"delivered": 4, "dropped": 0}
        assert user.call("daemon.health")["result"]["in_flight"] == 0


def test_hardware_samples_and_snapshot(daemon: DaemonProcess, echo_model: Path) -> None:
    with daemon.connect() as conn:
        conn.call("models.load", {"model": str(echo_model)})
        snap = conn.call("hardware.snapshot")["result"]
        assert "psutil" in snap["monitors"] and snap["workers"][str(echo_model.resolve())] > 10_000_000
        import os

        assert len(snap["monitors"]["psutil"]["cpu_percent_per_core"]) == os.cpu_count()
        rid = conn.send("events.subscribe", {"topics": ["hardware"], "interval_s": 0.2})
        samples = []
        started = time.monotonic()
        while len(samples) < 3:
            samples.append(conn.read()["params"]["event"])
        assert time.monotonic() - started >= 0.35  # paced by interval_s
        assert all(s["kind"] == "hardware.sample" and "psutil" in s["data"]["monitors"] for s in samples)
        conn.send("$/cancel", {"id": rid}, notify=True)
        notes, final = conn.until_response(rid)
        assert final["result"]["delivered"] >= 3
        bad = conn.call("events.subscribe", {"topics": ["gossip"]})["error"]
        assert bad["data"]["name"] == "InvalidParams" and bad["data"]["field"] == "topics"
