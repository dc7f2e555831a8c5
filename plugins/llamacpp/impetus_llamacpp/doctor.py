"""``impetusctl doctor``'s llama-server line (``impetus_register_doctor_checks``): the binary
a worker would run, where it came from, its version and build flags, and on a CUDA build
whether nvidia-smi sees a GPU for it."""

from __future__ import annotations

import sys

from impetusd.plugin_api import Config, Diagnosis

from . import binary, gpu

NAME = "llama-server"


def llama_server(config: Config) -> Diagnosis:
    """The llama-server binary the llama.cpp backend would run: where, which version, which flags."""
    try:
        found = binary.find()
    except Exception as exc:  # NoBackend: none, or one too old
        return Diagnosis(NAME, "warn" if sys.platform == "darwin" else "fail", str(exc), binary.FIX)
    flags = f"; built with {found.flags}" if found.flags else ""
    grammar = f"llguidance {found.llguidance} grammars" if found.llguidance else "llama.cpp's GBNF grammars (no regex or Lark formats)"
    said = f"{found.path}: {found.variant} build, {found.version}, {found.built_with}, {grammar}{flags}"
    if found.variant == "cuda":
        gpus = gpu.query()
        if not gpus:
            fix = "IMPETUS_CUDA=0 scripts/setup builds the CPU variant"
            return Diagnosis(NAME, "warn", f"{said}; but nvidia-smi finds no NVIDIA GPU, so it runs on the CPU", fix)
        said += "; GPUs: " + ", ".join(f"{g.name} ({g.free_bytes / 2**30:.1f} of {g.total_bytes / 2**30:.1f} GiB free)" for g in gpus)
    return Diagnosis(NAME, "pass", said)
