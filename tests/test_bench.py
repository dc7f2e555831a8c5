"""Small runs of the resilience benchmarks (bench/fuzz.py, bench/soak.py): the same
code as the full runs, with figures small enough for CI. Only correctness is
asserted here (no crash, no internal error, answers typed, bounded memory);
speed and memory targets are read from the full runs' JSON."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))


def test_fuzz_small_run_never_crashes_the_daemon() -> None:
    import fuzz

    result = fuzz.run(frames=1500, rate=0, conns=3, baseline=5, big_line=True, token_s=0.002)
    assert result["daemon_crashes"] == 0
    assert result["internal_errors"] == 0 and result["connection_failures_logged"] == 0
    assert result["frames_sent"] >= 1500 and result["frames_by_category"]["64MB_line"] == 1
    answers = result["answers_by_name"]
    assert answers.get("MessageTooLarge") == 1
    assert {"ParseError", "InvalidRequest", "InvalidParams", "MethodNotFound"} <= set(answers)
    assert "<unrecognised answer>" not in answers
    assert result["valid_client_ms"]["served_after"] == 20
    assert result["daemon_rss_mb"]["growth"] < 20, result["daemon_rss_mb"]


def test_soak_small_run_keeps_one_worker_and_no_requests_behind() -> None:
    import soak

    result = soak.run(requests=150)
    assert result["same_worker_throughout"] is True
    assert result["in_flight_at_end"] == 0
    assert result["cancelled_mid_stream"] == 12 and result["disconnected_mid_stream"] == 6
    assert result["daemon_rss_mb"]["growth"] < 20 and result["worker_rss_mb"]["growth"] < 20, result


def test_pipeline_small_run_streams_every_token() -> None:
    import pipeline

    result = pipeline.run(tokens=3000, calls=200, runs=1)
    [stream] = result["stream"]["runs"]
    assert stream["tokens"] == stream["chunks"] == 3000
    assert result["health_round_trip"]["calls"] == 200 and result["health_round_trip"]["p50_us"] > 0
