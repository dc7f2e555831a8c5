"""The psutil monitor measures CPU over a window, from the first call on."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from helpers import DaemonProcess

from impetus_psutil.sampler import CpuSampler

SPIN = "import time\nend = time.monotonic() + 4\nwhile time.monotonic() < end: pass"


def test_first_sample_is_measured_under_load() -> None:
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.5)
        sample = CpuSampler(first_window_s=0.5).latest()
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    assert sample is not None and sample.window_s == 0.5
    assert len(sample.per_core) == os.cpu_count()
    assert sample.percent >= 80  # every core was kept busy; psutil's first interval=None call says 0.0


def test_sampler_stops_when_nobody_reads_and_restarts() -> None:
    sampler = CpuSampler(window_s=0.1, first_window_s=0.1, idle_stop_s=0.3)
    first = sampler.latest()
    thread = sampler._thread
    assert first is not None and thread is not None
    thread.join(3)
    assert not thread.is_alive()  # idle: no thread left running
    again = sampler.latest()
    assert again is not None and again.at > first.at and sampler._thread is not thread


def test_snapshot_reports_the_daemon_and_each_worker(daemon: DaemonProcess, echo_model) -> None:  # type: ignore[no-untyped-def]
    with daemon.connect() as conn:
        loaded = conn.call("models.load", {"model": str(echo_model)})["result"]
        snap = conn.call("hardware.snapshot")["result"]
    ps = snap["monitors"]["psutil"]
    assert ps["cpu_percent"] is not None and ps["cpu_window_s"] > 0 and len(ps["cpu_percent_per_core"]) == os.cpu_count()
    assert ps["daemon_rss_bytes"] > 10_000_000
    assert ps["children_rss_bytes"][str(loaded["model"]["pid"])] > 10_000_000
    assert ps["disk"]["path"] == str(daemon.home) and ps["disk"]["free_bytes"] > 0
    assert snap["monitors"]["linux"]["available"] is True and snap["thermal"]["level"] == "unknown"
