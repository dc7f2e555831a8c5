"""The bundled SmolLM2-135M answering through a real daemon and a real MLX worker.

Prompts are short and max_tokens small: MLX on this CPU prefills ~14 tok/s.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from helpers import DaemonProcess, pid_alive, wait_until

MODEL = "smollm2-135m"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def model_daemon(shared_daemon: DaemonProcess) -> DaemonProcess:
    with shared_daemon.connect() as conn:
        result = conn.call("models.load", {"model": MODEL, "backend": "mlx", "keep_alive": -1})
        assert "result" in result, result
    return shared_daemon


def test_answers_the_question(model_daemon: DaemonProcess) -> None:
    with model_daemon.connect() as conn:
        result = conn.call("chat", {"model": MODEL, "messages": QUESTION, "max_tokens": 12, "temperature": 0})["result"]
    assert "Paris" in result["message"]["content"]
    assert result["model"] == MODEL and result["backend"] == "mlx"
    assert result["finish_reason"] in ("stop", "length")
    usage, timings = result["usage"], result["timings"]
    assert usage["prompt_tokens"] > 10 and 1 <= usage["completion_tokens"] <= 12
    assert timings["ttft_ms"] > 0 and timings["prefill_tps"] > 0 and timings["decode_tps"] > 0
    assert timings["total_ms"] >= timings["ttft_ms"]


def test_stream_chunks_make_up_the_answer(model_daemon: DaemonProcess) -> None:
    with model_daemon.connect() as conn:
        rid = conn.send("chat", {"model": MODEL, "messages": QUESTION, "max_tokens": 6, "stream": True})
        notes, final = conn.until_response(rid)
    deltas = [n["params"]["delta"] for n in notes if n["method"] == "chat.chunk" and n["params"]["id"] == rid]
    result = final["result"]
    assert len(deltas) >= 2
    assert "".join(deltas) == result["message"]["content"]
    assert result["finish_reason"] == "length" and result["usage"]["completion_tokens"] == 6


def test_complete_and_stop_sequences(model_daemon: DaemonProcess) -> None:
    with model_daemon.connect() as conn:
        params = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}
        free = conn.call("complete", params)["result"]
        text = free["text"]
        words = text.split()
        assert len(words) >= 3, text
        stop = " " + words[2]
        cut = conn.call("complete", {**params, "stop": [stop]})["result"]
    assert cut["finish_reason"] == "stop" and cut["stop_sequence"] == stop  # which one ended it
    assert cut["text"] == text[: text.index(stop)]
    assert stop not in cut["text"] and "stop_sequence" not in free


def test_seed_makes_sampling_repeatable(model_daemon: DaemonProcess) -> None:
    params = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 5, "temperature": 1.0, "top_k": 40, "top_p": 0.95, "min_p": 0.02, "seed": 7}
    with model_daemon.connect() as conn:
        first = conn.call("complete", params)["result"]["text"]
        second = conn.call("complete", params)["result"]["text"]
    assert first == second and first


def test_cancel_real_generation(model_daemon: DaemonProcess) -> None:
    with model_daemon.connect() as conn:
        rid = conn.send("chat", {"model": MODEL, "messages": QUESTION, "max_tokens": 300, "stream": True})
        assert conn.read()["method"] == "chat.chunk"
        started = time.monotonic()
        conn.send("$/cancel", {"id": rid}, notify=True)
        _, final = conn.until_response(rid)
        assert time.monotonic() - started < 3.0
        assert final["result"]["finish_reason"] == "cancelled"
        assert final["result"]["usage"]["completion_tokens"] < 300
        assert conn.call("models.loaded")["result"]["models"][0]["in_flight"] == 0


def test_sigterm_during_streaming_run(tmp_path_factory: pytest.TempPathFactory) -> None:
    d = DaemonProcess(tmp_path_factory.mktemp("term")).start()
    with d.connect() as conn:
        worker = conn.call("models.load", {"model": MODEL})["result"]["model"]["pid"]
    client = subprocess.Popen(
        [sys.executable, "-m", "impetusctl", "--no-autostart", "run", MODEL, "Name three colours.", "--max-tokens", "24"],
        env=d.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert client.stdout is not None
    first = client.stdout.read(1)  # the answer has started streaming
    assert first
    d.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    out, err = client.communicate(timeout=60)
    assert d.proc.wait(60) == 0  # type: ignore[union-attr]
    assert not d.socket.exists()
    assert wait_until(lambda: not pid_alive(worker), timeout=5)
    text = (first + out).decode()
    if client.returncode == 0:
        assert text.strip()  # the finished answer
    else:
        assert "ShuttingDown" in err.decode() or "WorkerCrashed" in err.decode()


LONG = "Summarise this text. " + " ".join(f"Sentence {i} is about the weather in a small town by the sea." for i in range(100))


def _idle_after(conn, started: float, timeout: float = 15.0) -> float:
    def idle() -> bool:
        models = conn.call("models.loaded")["result"]["models"]
        return all(m["in_flight"] == 0 for m in models)

    assert wait_until(idle, timeout=timeout, interval=0.1)
    return time.monotonic() - started


def test_cancel_and_disconnect_stop_a_long_prefill(model_daemon: DaemonProcess) -> None:
    """A prompt of ~1,600 tokens takes minutes to prefill on this CPU (~7 s with
    float32 weights on OpenBLAS); stopping must not."""
    import psutil

    params = {"model": MODEL, "messages": [{"role": "user", "content": LONG}], "max_tokens": 4, "stream": True}
    with model_daemon.connect() as conn:
        worker = psutil.Process(conn.call("models.loaded")["result"]["models"][0]["pid"])
        rid = conn.send("chat", params)
        time.sleep(1.5)  # well inside the prefill
        started = time.monotonic()
        conn.send("$/cancel", {"id": rid}, notify=True)
        notes, final = conn.until_response(rid)
        took = time.monotonic() - started
        result = final["result"]
        assert not notes and result["finish_reason"] == "cancelled"
        assert result["usage"]["completion_tokens"] == 0 and result["usage"]["prompt_tokens"] > 300
        assert took < 8.0, f"cancel took {took:.1f} s"
    client = model_daemon.connect()
    client.send("chat", params)
    time.sleep(1.5)
    client.close()  # disconnect mid-prefill
    started = time.monotonic()
    with model_daemon.connect() as watcher:
        took = _idle_after(watcher, started)
        assert took < 8.0, f"the prefill went on for {took:.1f} s after the client left"
        worker.cpu_percent()
        time.sleep(1.0)
        assert worker.cpu_percent() < 25  # the worker is idle, not still prefilling
