"""mlx-lm and Hugging Face safetensors folders imported into a real daemon and run
by real MLX workers. The models are tiny random llamas (gibberish out), so the
tests check token counts, finish reasons and streaming, never text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import DaemonProcess
from safetensors_factory import VOCAB, write_hf_llama, write_mlx_llama

EOS = VOCAB - 1
NO_EOS = {str(EOS): -100}  # so a random model runs to max_tokens


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llm-folders")
    write_hf_llama(root / "hf")
    write_hf_llama(root / "hf-sharded", shards=2, seed=1)
    write_mlx_llama(root / "mlx-q4")
    write_mlx_llama(root / "mlx-f32", bits=None, seed=2)
    return {p.name: p for p in root.iterdir()}


@pytest.mark.parametrize("kind,fmt", [("hf", "safetensors"), ("hf-sharded", "safetensors"), ("mlx-q4", "mlx"), ("mlx-f32", "mlx")])
def test_folder_imports_loads_and_generates(shared_daemon: DaemonProcess, folders: dict[str, Path], kind: str, fmt: str) -> None:
    name = f"tiny-{kind}"
    with shared_daemon.connect() as conn:
        info = conn.call("models.import", {"path": str(folders[kind]), "name": name})["result"]
        assert info["format"] == fmt and info["metadata"]["architecture"] == "llama"
        loaded = conn.call("models.load", {"model": name})["result"]
        assert loaded["model"]["backend"] == "mlx"
        rid = conn.send("chat", {"model": name, "messages": [{"role": "user", "content": "w1 w2 w3"}],
                                 "max_tokens": 5, "stream": True, "logit_bias": NO_EOS})
        notes, final = conn.until_response(rid)
        result = final["result"]
        deltas = [n["params"]["delta"] for n in notes if n["method"] == "chat.chunk" and n["params"]["id"] == rid]
        assert result["backend"] == "mlx" and result["finish_reason"] == "length"
        assert result["usage"]["completion_tokens"] == 5 and result["usage"]["prompt_tokens"] > 3
        assert len(deltas) >= 2 and "".join(deltas) == result["message"]["content"]
        done = conn.call("complete", {"model": name, "prompt": "w5 w6", "max_tokens": 3, "logit_bias": NO_EOS, "keep_alive": 0})["result"]
        assert done["finish_reason"] == "length" and done["usage"]["completion_tokens"] == 3
        assert done["usage"]["prompt_tokens"] == 2  # the word-level tokenizer adds no BOS


def test_folder_stops_at_eos(shared_daemon: DaemonProcess, folders: dict[str, Path]) -> None:
    """The tokenizer's EOS (from generation_config.json) ends a generation: forced by bias."""
    with shared_daemon.connect() as conn:
        result = conn.call("complete", {"model": str(folders["hf"]), "prompt": "w1", "max_tokens": 5,
                                        "logit_bias": {str(EOS): 100}, "keep_alive": 0})["result"]
    assert result["finish_reason"] == "stop" and result["usage"]["completion_tokens"] <= 1


def test_unknown_architecture_is_unsupported(shared_daemon: DaemonProcess, folders: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    shutil.copytree(folders["hf"], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "no-such-arch"}))
    with shared_daemon.connect() as conn:
        err = conn.call("models.load", {"model": str(folder)})["error"]
        assert err["data"]["name"] == "UnsupportedFormat" and "no-such-arch" in err["message"]
        assert conn.call("daemon.health")["result"]["status"] == "ok"
