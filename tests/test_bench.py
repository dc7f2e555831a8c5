"""Small runs of the benchmarks (bench/fuzz.py, bench/soak.py, bench/backends.py): the
same code as the full runs, with figures small enough for CI. Only correctness is
asserted here (no crash, no internal error, answers typed, bounded memory);
speed and memory targets are read from the full runs' JSON."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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


def test_load_memory_one_run_returns_the_worker_memory() -> None:
    import load_memory

    result = load_memory.run(runs=1)
    [plain] = result["daemon"]["runs"]
    assert plain["memory"]["after_load"]["workers_rss"] > 50_000_000  # the model's worker
    assert plain["memory"]["after_unload"]["workers_rss"] == 0  # unloading ended it
    assert plain["warmup_ms"] > 0 and plain["engine_load_ms"] > 0
    [spare] = result["daemon_spare_worker"]["runs"]
    assert spare["memory"]["before_load"]["workers_rss"] > 0  # the spare, waiting
    assert set(result["in_process"]["runs"][0]) >= {"imports_ms", "weights_ms", "tokenizer_ms", "warmup_ms"}


@pytest.mark.model
def test_backends_bench_small_run() -> None:
    import backends

    result = backends.run(runs=1, max_tokens=8, mlx=True)
    assert result["automatic_backend"] == "llamacpp"
    for side in ("impetus_llamacpp", "llama_server_direct", "impetus_mlx"):
        figures = result[side]
        assert figures["decode_tps"] > 0 and figures["prefill_tps"] > 0 and figures["tokens"] == 8, (side, figures)
        assert figures["prompt_tokens"] == result["impetus_llamacpp"]["prompt_tokens"]  # one prompt for all
    assert set(result["ratio_impetus_llamacpp_vs_direct"]) == {"decode_tps", "prefill_tps", "client_decode_tps"}


def test_pipeline_small_run_streams_every_token() -> None:
    import pipeline

    result = pipeline.run(tokens=3000, calls=200, runs=1)
    [stream] = result["stream"]["runs"]
    assert stream["tokens"] == stream["chunks"] == 3000
    assert result["health_round_trip"]["calls"] == 200 and result["health_round_trip"]["p50_us"] > 0


def test_apis_bench_small_run() -> None:
    import apis

    result = apis.run(runs=1, max_tokens=4)
    for side in ("ollama_api_chat", "anthropic_v1_messages", "openai_v1_chat_completions"):
        figures = result[side]
        assert figures["ttft_ms"] > 0 and figures["client_tps"] > 0 and figures["pieces"] == 4, (side, figures)
