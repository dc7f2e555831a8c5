"""Thermal-aware scheduling with a scripted monitor (tests/plugins/impetus_thermal_script.py):
the daemon backs off when the machine runs hot and recovers when it cools."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import DaemonProcess, RawConnection, short_socket

CONFIG = "thermal_poll_s = 0.2\nthermal_max_batch = 1\nthermal_prefill_chunk = 64\n"


def tuning(conn: RawConnection, model: Path) -> dict[str, Any]:
    """What the echo engine in the model's worker runs with, asked through a chat."""
    reply = conn.call("chat", {"model": str(model), "messages": [{"role": "user", "content": "tuning?"}]})
    return json.loads(reply["result"]["message"]["content"])


def next_event(watcher: RawConnection, kind: str) -> dict[str, Any]:
    while True:
        msg = watcher.read()
        event = msg["params"]["event"]
        assert event["kind"].startswith("thermal.")
        if event["kind"] == kind:
            return event


def test_backs_off_when_hot_and_recovers(tmp_path: Path) -> None:
    heat = tmp_path / "thermal"
    heat.write_text("nominal")
    d = DaemonProcess(tmp_path / "d", CONFIG, IMPETUS_PLUGINS="impetus_echo,impetus_thermal_script", IMPETUS_TEST_THERMAL=str(heat)).start()
    a, b, c = (tmp_path / f"{n}.echo" for n in "abc")
    for m in (a, b, c):
        m.write_text("0")
    try:
        with d.connect() as conn, d.connect() as watcher:
            watcher.send("events.subscribe", {"topics": ["thermal"]})
            assert conn.call("daemon.health")["result"]["thermal"]["level"] in ("unknown", "nominal")
            assert tuning(conn, a) == {"max_batch": None, "prefill_chunk": None, "warm_ups": 1}

            heat.write_text("serious")
            changed = next_event(watcher, "thermal.changed")
            assert changed["data"] == {"level": "serious", "previous": "nominal", "source": "scripted"}
            backoff = next_event(watcher, "thermal.backoff")
            assert backoff["data"]["models"] == [str(a.resolve())] and backoff["data"]["prefill_chunk"] == 64
            assert tuning(conn, a) == {"max_batch": 1, "prefill_chunk": 64, "warm_ups": 1}  # told while running
            health = conn.call("daemon.health")["result"]["thermal"]
            assert health["level"] == "serious" and health["throttled"] is True and health["max_batch"] == 1
            # loads while hot start with the lowered settings and no warm-up
            assert tuning(conn, b) == {"max_batch": 1, "prefill_chunk": 64, "warm_ups": 0}
            conn.call("models.load", {"model": str(c)})
            top = subprocess.run([sys.executable, "-m", "impetusctl", "--no-autostart", "top", "--once"], env=d.env, capture_output=True, text=True, timeout=60)
            assert "thermal serious (backing off: batch 1, prefill chunk 64)" in top.stdout
            snap = conn.call("hardware.snapshot")["result"]
            assert snap["thermal"]["throttled"] is True and snap["monitors"]["scripted"]["thermal_state"] == "serious"
            cpu_model = snap["monitors"]["linux"].get("cpu_model")
            if cpu_model:  # the machine line shows what the Linux monitor measured
                assert cpu_model in top.stdout

            heat.write_text("critical")  # hotter: a new level, still backing off
            assert next_event(watcher, "thermal.changed")["data"]["level"] == "critical"

            heat.write_text("nominal")
            restored = next_event(watcher, "thermal.restored")
            assert sorted(restored["data"]["models"]) == sorted(str(m.resolve()) for m in (a, b, c))
            assert restored["data"]["prefill_chunk"] is None and restored["data"]["max_batch"] is None
            assert restored["data"]["warmed_up"] == [str(c.resolve())]  # b's request already warmed it
            assert tuning(conn, a) == {"max_batch": None, "prefill_chunk": None, "warm_ups": 1}
            assert tuning(conn, c) == {"max_batch": None, "prefill_chunk": None, "warm_ups": 1}
            assert tuning(conn, b)["warm_ups"] == 0
            health = conn.call("daemon.health")["result"]["thermal"]
            assert health == {**health, "level": "nominal", "throttled": False, "prefill_chunk": None}
    finally:
        assert d.stop() == 0


def test_fair_is_below_the_default_threshold(tmp_path: Path) -> None:
    heat = tmp_path / "thermal"
    heat.write_text("fair")
    d = DaemonProcess(tmp_path / "d", CONFIG, IMPETUS_PLUGINS="impetus_echo,impetus_thermal_script", IMPETUS_TEST_THERMAL=str(heat)).start()
    model = tmp_path / "m.echo"
    model.write_text("0")
    try:
        with d.connect() as conn, d.connect() as watcher:
            watcher.send("events.subscribe", {"topics": ["thermal"]})
            heat.write_text("critical")
            next_event(watcher, "thermal.backoff")
            heat.write_text("fair")  # below the threshold ("serious"): the backoff ends
            restored = next_event(watcher, "thermal.restored")
            assert restored["data"]["level"] == "fair"
            assert tuning(conn, model) == {"max_batch": None, "prefill_chunk": None, "warm_ups": 1}
    finally:
        assert d.stop() == 0


def test_mlx_engine_tunes_its_prefill_chunk() -> None:
    """The MLX engine lowers its prefill step, never above the device's default."""
    from impetus_mlx.engine import MLXEngine, prefill_chunk

    from impetusd.engine.messages import Tuning

    engine = MLXEngine(model=None, tokenizer=None, add_bos=False, context_length=2048, load_ms=0.0, details={})  # type: ignore[arg-type]
    default = prefill_chunk()
    engine.tune(Tuning(max_batch=1, prefill_chunk=max(default // 2, 1)))
    assert engine.prefill_step == max(default // 2, 1)
    engine.tune(Tuning(prefill_chunk=default * 4))
    assert engine.prefill_step == default
    engine.tune(Tuning(prefill_chunk=max(default // 4, 1)))
    engine.tune(Tuning())
    assert engine.prefill_step == default


def test_doctor_reports_the_thermal_state_and_the_memory_limit(tmp_path: Path) -> None:
    from helpers import daemon_env

    heat = tmp_path / "thermal"
    heat.write_text("critical")
    env = daemon_env(tmp_path / "home", short_socket(), IMPETUS_PLUGINS="impetus_thermal_script", IMPETUS_TEST_THERMAL=str(heat))
    done = subprocess.run([sys.executable, "-m", "impetusctl", "--json", "--no-autostart", "doctor"], env=env, capture_output=True, text=True, timeout=180)
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["thermal"]["status"] == "warn" and "critical (scripted)" in checks["thermal"]["detail"]
    assert checks["memory limit"]["status"] in ("pass", "warn", "fail") and "cgroup" in checks["memory limit"]["detail"]
    heat.write_text("nominal")
    done = subprocess.run([sys.executable, "-m", "impetusctl", "--json", "--no-autostart", "doctor"], env=env, capture_output=True, text=True, timeout=180)
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["thermal"] == {**checks["thermal"], "status": "pass", "detail": "thermal pressure nominal (scripted)"}
