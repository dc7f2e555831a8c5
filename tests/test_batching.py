"""Continuous batching in the MLX worker, on the bundled model through a real daemon.

Prompts are short and max_tokens small: MLX on this CPU prefills ~14 tok/s.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import DaemonProcess, daemon_env

MODEL = "smollm2-135m"
MLX = 'backend = {gguf = "mlx"}\n'  # continuous batching is the MLX backend's


def chat(text: str, **extra: object) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "temperature": 0, **extra}


@pytest.fixture(scope="module")
def batch_daemon(tmp_path_factory: pytest.TempPathFactory):
    d = DaemonProcess(tmp_path_factory.mktemp("batch"), config="max_queued_per_model = 1\n" + MLX).start()
    with d.connect() as conn:
        assert "result" in conn.call("models.load", {"model": MODEL, "keep_alive": -1})
    yield d
    d.stop()


def _together(d: DaemonProcess, requests: list[dict]) -> list[dict]:
    """Send every request on its own connection at once; the final results in order."""
    conns = [d.connect() for _ in requests]
    try:
        ids = [c.send("chat", r) for c, r in zip(conns, requests)]
        return [c.until_response(i)[1] for c, i in zip(conns, ids)]
    finally:
        for c in conns:
            c.close()


def test_concurrent_requests_share_a_batch_and_answer_as_alone(batch_daemon: DaemonProcess) -> None:
    questions = ["What is the capital of France?", "Name three colours."]
    with batch_daemon.connect() as conn:
        [loaded] = conn.call("models.loaded")["result"]["models"]
        assert loaded["engine"]["max_batch"] == 8
        alone = [conn.call("chat", chat(q, max_tokens=10))["result"] for q in questions]
    assert [r["timings"]["batch_size"] for r in alone] == [1, 1]
    together = [m["result"] for m in _together(batch_daemon, [chat(q, max_tokens=10) for q in questions])]
    assert [r["timings"]["batch_size"] for r in together] == [2, 2]
    # Greedy decoding gives the same text in a batch as alone (checked on this model).
    assert [r["message"]["content"] for r in together] == [r["message"]["content"] for r in alone]
    for r in together:
        t = r["timings"]
        assert t["ttft_ms"] > 0 and t["decode_tps"] > 0 and r["usage"]["completion_tokens"] >= 2


def test_cancelling_one_batched_stream_leaves_the_other_finishing(batch_daemon: DaemonProcess) -> None:
    a, b = batch_daemon.connect(), batch_daemon.connect()
    try:
        ra = a.send("chat", chat("Tell me a long story about a dragon.", max_tokens=40, stream=True))
        rb = b.send("chat", chat("Tell me a long story about a knight.", max_tokens=24, stream=True))
        assert a.read()["method"] == "chat.chunk" and b.read()["method"] == "chat.chunk"
        a.send("$/cancel", {"id": ra}, notify=True)
        _, fa = a.until_response(ra)
        notes, fb = b.until_response(rb)
    finally:
        a.close()
        b.close()
    assert fa["result"]["finish_reason"] == "cancelled" and fa["result"]["usage"]["completion_tokens"] < 40
    result = fb["result"]
    assert result["finish_reason"] == "length" and result["usage"]["completion_tokens"] == 24
    assert result["timings"]["batch_size"] == 2
    deltas = "".join(n["params"]["delta"] for n in notes if n.get("method") == "chat.chunk")
    assert result["message"]["content"].endswith(deltas) and deltas


def test_a_full_batch_plus_a_full_queue_is_overloaded_at_once(batch_daemon: DaemonProcess) -> None:
    """max_batch (8) run together, max_queued_per_model (1) waits; one more is refused."""
    ask = chat("Count from one to one hundred.", max_tokens=200, stream=True)
    with batch_daemon.connect() as conn:
        conn.call("chat", {**ask, "max_tokens": 2, "stream": False})  # its prefix is cached: the rest start fast
    conns = [batch_daemon.connect() for _ in range(9)]
    try:
        ids = [c.send("chat", ask) for c in conns[:8]]
        for c in conns[:8]:
            assert c.read()["method"] == "chat.chunk"  # all eight are decoding
        ids.append(conns[8].send("chat", ask))  # waits for room in the batch
        with batch_daemon.connect() as extra:
            answer = extra.call("chat", ask)
        err = answer["error"]
        assert err["data"]["name"] == "Overloaded" and err["data"]["reason"] == "queue" and err["data"]["limit"] == 1
        for c, rid in zip(conns, ids):
            c.send("$/cancel", {"id": rid}, notify=True)
        finals = [c.until_response(rid)[1]["result"] for c, rid in zip(conns, ids)]
    finally:
        for c in conns:
            c.close()
    assert all(f["finish_reason"] == "cancelled" for f in finals)
    assert max(f["timings"]["batch_size"] or 0 for f in finals) == 8


def _worker(tmp_path: Path) -> subprocess.Popen[bytes]:
    env = daemon_env(tmp_path / "home", tmp_path / "sock")
    return subprocess.Popen([sys.executable, "-m", "impetusd.workers"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)


def _send(proc: subprocess.Popen[bytes], method: str, params: object, rid: int | None = None) -> None:
    msg: dict[str, object] = {"jsonrpc": "2.0", "method": method, "params": params}
    if rid is not None:
        msg["id"] = rid
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(msg).encode() + b"\n")
    proc.stdin.flush()


def _results(proc: subprocess.Popen[bytes], ids: set[int]) -> dict[int, dict]:
    assert proc.stdout is not None
    out: dict[int, dict] = {}
    while ids - set(out):
        msg = json.loads(proc.stdout.readline())
        if msg.get("id") in ids:
            out[msg["id"]] = msg
    return out


def test_worker_tune_changes_the_batch_limit(tmp_path: Path) -> None:
    """The daemon's side of worker.tune belongs to thermal scheduling; here a real
    worker process is driven over its pipe exactly as the daemon does."""
    from impetusd.store.catalog import CATALOG

    path = CATALOG[MODEL].local_path()
    assert path is not None
    proc = _worker(tmp_path)
    try:
        _send(proc, "worker.start", {"spec": {"name": MODEL, "path": str(path), "format": "gguf"}, "backend": "mlx"}, 1)
        info = _results(proc, {1})[1]["result"]
        assert info["details"]["max_batch"] == 8
        gen = {"request": {"kind": "complete", "prompt": "The capital of France is", "max_tokens": 3}}
        _send(proc, "worker.tune", {"max_batch": 1, "prefill_chunk": 8})
        _send(proc, "generate", gen, 2)
        _send(proc, "generate", gen, 3)
        tuned = _results(proc, {2, 3})
        assert [tuned[i]["result"]["result"]["batch_limit"] for i in (2, 3)] == [1, 1]
        assert [tuned[i]["result"]["result"]["batch_size"] for i in (2, 3)] == [1, 1]
        assert tuned[2]["result"]["result"]["text"] == tuned[3]["result"]["result"]["text"]
        _send(proc, "worker.tune", {"max_batch": None})
        _send(proc, "generate", gen, 4)
        _send(proc, "generate", gen, 5)
        restored = _results(proc, {4, 5})
        assert [restored[i]["result"]["result"]["batch_limit"] for i in (4, 5)] == [8, 8]
        assert [restored[i]["result"]["result"]["batch_size"] for i in (4, 5)] == [2, 2]
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)


def test_a_seeded_sampling_request_runs_alone_and_repeats(batch_daemon: DaemonProcess) -> None:
    """MLX's random state is global, so a seed with temperature > 0 cannot share a batch."""
    seeded = chat("Once upon a time", max_tokens=5, temperature=1.0, top_k=40, seed=7)
    greedy = chat("Name a fruit.", max_tokens=8)
    results = [m["result"] for m in _together(batch_daemon, [greedy, seeded])]
    with batch_daemon.connect() as conn:
        again = conn.call("chat", seeded)["result"]
    assert results[1]["timings"]["batch_size"] == 1 and again["timings"]["batch_size"] == 1
    assert results[1]["message"]["content"] == again["message"]["content"] != ""
    assert results[0]["finish_reason"] in ("stop", "length") and results[0]["message"]["content"]


def test_a_long_prompt_joining_does_not_stall_a_decoding_stream(batch_daemon: DaemonProcess) -> None:
    """The long prompt is prefilled a chunk per step, between the other stream's tokens."""
    long_text = "Summarise this. " + " ".join(f"Line {i} tells of boats, nets and gulls in the bay." for i in range(120))
    with batch_daemon.connect() as conn:
        a = conn.send("chat", chat("Write a long story about a lighthouse.", max_tokens=200, stream=True))
        assert conn.read()["params"]["id"] == a  # A is decoding
        b = conn.send("chat", chat(long_text, max_tokens=1, stream=True))
        a_chunks = 0
        while True:
            msg = conn.read()
            if msg.get("method") == "chat.chunk" and msg["params"]["id"] == a:
                a_chunks += 1
                if a_chunks == 8:
                    break  # A went on while B was still being prefilled
                continue
            assert msg.get("id") != a, "A ended before B started decoding"
            assert msg.get("params", {}).get("id") != b and msg.get("id") != b, "B's prefill held A up"
        conn.send("$/cancel", {"id": b}, notify=True)
        conn.send("$/cancel", {"id": a}, notify=True)
        finals: dict[int, dict] = {}
        while len(finals) < 2:
            msg = conn.read()
            if msg.get("id") in (a, b):
                finals[msg["id"]] = msg["result"]
    assert finals[b]["usage"]["prompt_tokens"] > 1000
    assert finals[a]["finish_reason"] == "cancelled"


def test_logit_bias_applies_to_its_own_sequence_only(batch_daemon: DaemonProcess) -> None:
    """Per-request logits processors in one batch: a +100 bias makes one answer a
    single token repeated, and leaves its neighbour as it is alone."""
    plain = chat("Name a fruit.", max_tokens=6)
    biased = chat("Name a fruit.", max_tokens=4, logit_bias={"28": 100})
    with batch_daemon.connect() as conn:
        alone = conn.call("chat", plain)["result"]["message"]["content"]
    results = [m["result"] for m in _together(batch_daemon, [plain, biased])]
    assert results[0]["timings"]["batch_size"] == 2 and results[0]["message"]["content"] == alone
    text = results[1]["message"]["content"]
    assert results[1]["usage"]["completion_tokens"] == 4 and text and text == text[: len(text) // 4] * 4
