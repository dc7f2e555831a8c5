"""Opt-in conversion of a PyTorch pickle checkpoint to a safetensors folder.

The unpickling happens in a separate process (``pickle_to_safetensors.py``) with
``torch.load(weights_only=True)``, so the daemon never unpickles anything and
never imports torch. torch is optional: the Python that runs the conversion is
``$IMPETUS_TORCH_PYTHON`` if set, else the daemon's own; if it lacks torch or
safetensors the answer is ``ConversionFailed`` with ``reason: missing-dependency``.
All the checkpoint's weight files become one ``model.safetensors``; config,
generation config, tokenizer and sentence-transformers files beside them are
copied, so the result is an ordinary safetensors folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from impetusd.plugin_api import ConversionFailed

from .folder import CONFIG, GENERATION_CONFIG, MODULE_DIR, SENTENCE_TRANSFORMERS_FILES, TOKENIZER_FILES
from .pickles import pickle_files

SCRIPT = Path(__file__).with_name("pickle_to_safetensors.py")
TIMEOUT_S = 3600.0
REASONS = {3: "missing-dependency", 4: "refused"}
# Training leftovers that sit beside weights in checkpoint folders: not part of the model.
NOT_WEIGHTS = frozenset({"training_args.bin", "optimizer.pt", "optimizer.bin", "scheduler.pt", "scheduler.bin", "rng_state.pth", "scaler.pt"})


def python() -> str:
    return os.environ.get("IMPETUS_TORCH_PYTHON") or sys.executable


def convert(path: Path, dest: Path) -> None:
    files = [f for f in pickle_files(path) if f.name not in NOT_WEIGHTS or f == path]
    if not files:
        raise ConversionFailed(f"{path}: not a PyTorch pickle checkpoint", path=str(path), reason="refused")
    interpreter = python()
    try:
        done = subprocess.run(
            [interpreter, str(SCRIPT), *map(str, files), str(dest / "model.safetensors")],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConversionFailed(f"{path}: could not run the conversion with {interpreter}: {exc}", path=str(path), reason="failed") from None
    if done.returncode:
        lines = done.stderr.strip().splitlines()
        why = lines[-1] if lines else f"exit status {done.returncode}"
        reason = REASONS.get(done.returncode, "failed")
        hint = " (install torch and safetensors there, or set IMPETUS_TORCH_PYTHON to a Python that has them)" if reason == "missing-dependency" else ""
        raise ConversionFailed(f"{path}: conversion failed: {why}{hint}", path=str(path), reason=reason, python=interpreter)
    source = path if path.is_dir() else path.parent
    for name in (CONFIG, GENERATION_CONFIG, *TOKENIZER_FILES, *SENTENCE_TRANSFORMERS_FILES):
        if (source / name).is_file():
            shutil.copyfile(source / name, dest / name)
    for module_config in source.glob("*/config.json"):
        if MODULE_DIR.match(module_config.parent.name):
            (dest / module_config.parent.name).mkdir(exist_ok=True)
            shutil.copyfile(module_config, dest / module_config.parent.name / "config.json")
