"""PyTorch pickle checkpoints: refused by default; converted once to safetensors
on request (torch from .venv-reference, which `scripts/setup --tests` makes), then loaded
and run like any safetensors folder."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from helpers import DaemonProcess, reference_python
from safetensors_factory import VOCAB, write_hf_llama

TO_PICKLE = """
import sys, torch
from safetensors.torch import load_file
torch.save(load_file(sys.argv[1]), sys.argv[2])
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """A Hugging Face llama folder whose weights are a torch.save'd state dict."""
    folder = tmp_path_factory.mktemp("ckpt") / "tiny-pt"
    write_hf_llama(folder)
    original = load_file(str(folder / "model.safetensors"))
    subprocess.run([str(reference_python()), "-c", TO_PICKLE, str(folder / "model.safetensors"), str(folder / "pytorch_model.bin")], check=True, timeout=300)
    (folder / "model.safetensors").unlink()
    (folder / "training_args.bin").write_bytes(pickle.dumps({"learning_rate": 0.1}, protocol=2))  # not weights: skipped
    return folder, original


@pytest.fixture(scope="module")
def torch_daemon(tmp_path_factory: pytest.TempPathFactory):
    d = DaemonProcess(tmp_path_factory.mktemp("conv"), IMPETUS_TORCH_PYTHON=str(reference_python())).start()
    yield d
    d.stop()


def _ctl(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "impetusctl", "--no-autostart", *args], env=daemon.env, capture_output=True, text=True, timeout=300)


def test_pickle_is_refused_without_opt_in(torch_daemon: DaemonProcess, checkpoint: tuple[Path, dict]) -> None:
    folder, _ = checkpoint
    with torch_daemon.connect() as conn:
        err = conn.call("models.import", {"path": str(folder)})["error"]
        assert err["data"]["name"] == "PickleRefused" and "--convert-pickle" in err["message"]
        err = conn.call("models.import", {"path": str(folder), "allow_pickle": True})["error"]
        assert err["data"]["name"] == "InvalidParams" and err["data"]["field"] == "allow_pickle"
    assert not (torch_daemon.home / "converted" / "tiny-pt").exists()


def test_opt_in_converts_registers_and_runs(torch_daemon: DaemonProcess, checkpoint: tuple[Path, dict]) -> None:
    folder, original = checkpoint
    out = _ctl(torch_daemon, "--json", "import", str(folder), "--name", "converted-pt", "--convert-pickle")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    store = torch_daemon.home / "converted" / "converted-pt"
    assert info["format"] == "safetensors" and info["path"] == str(store) and info["source"] == f"converted:{folder}"
    assert {"model.safetensors", "config.json", "tokenizer.json", "generation_config.json"} <= {f["name"] for f in info["files"]}
    converted = load_file(str(store / "model.safetensors"))
    assert converted.keys() == original.keys()
    for name, tensor in original.items():
        assert converted[name].dtype == tensor.dtype and np.array_equal(converted[name], tensor), name
    with torch_daemon.connect() as conn:
        result = conn.call("complete", {"model": "converted-pt", "prompt": "w1 w2", "max_tokens": 3,
                                        "logit_bias": {str(VOCAB - 1): -100}, "keep_alive": 0})["result"]
        assert result["finish_reason"] == "length" and result["usage"]["completion_tokens"] == 3
        removed = conn.call("models.remove", {"model": "converted-pt"})["result"]
    assert "model.safetensors" in removed["freed_files"] and not store.exists()


def test_hostile_pickle_is_refused_by_the_restricted_unpickler(torch_daemon: DaemonProcess, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # what a malicious checkpoint does: run a command when unpickled
            return (os.system, (f"touch {marker}",))

    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"w": Payload()}, protocol=2))
    with torch_daemon.connect() as conn:
        err = conn.call("models.import", {"path": str(folder), "convert_pickle": True})["error"]
    assert err["data"]["name"] == "ConversionFailed" and err["data"]["reason"] == "refused"
    assert not marker.exists()
    assert not any((torch_daemon.home / "converted").iterdir())


def test_without_torch_the_error_says_so(tmp_path: Path, checkpoint: tuple[Path, dict]) -> None:
    folder, _ = checkpoint
    d = DaemonProcess(tmp_path).start()  # the project's venv has no torch
    try:
        with d.connect() as conn:
            err = conn.call("models.import", {"path": str(folder), "convert_pickle": True})["error"]
            assert err["code"] == 1009 and err["data"]["name"] == "ConversionFailed"
            assert err["data"]["reason"] == "missing-dependency" and "torch" in err["message"]
            not_pickle = shutil.copytree(folder, tmp_path / "plain", ignore=shutil.ignore_patterns("*.bin"))
            err = conn.call("models.import", {"path": str(not_pickle), "convert_pickle": True})["error"]
            assert err["data"]["name"] == "InvalidParams" and err["data"]["field"] == "convert_pickle"
    finally:
        d.stop()
