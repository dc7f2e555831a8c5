"""Safetensors model folders: Hugging Face transformers (``safetensors``) and
mlx-lm (``mlx``), told apart by mlx-lm's own markers; PyTorch pickles are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from impetusd.plugin_api import ModelFormat, PluginRegistry, hookimpl


def _classify(path: Path) -> str | None:
    """``"mlx"``, ``"safetensors"`` or None; every folder gets at most one of the two."""
    from .describe import is_mlx
    from .folder import Folder, qualifies

    if not qualifies(path):
        return None
    return "mlx" if is_mlx(Folder(path)) else "safetensors"


def _inspect(path: Path, mlx: bool) -> dict[str, Any]:
    from .describe import describe
    from .folder import Folder

    return describe(Folder(path), mlx=mlx)


def detect_safetensors(path: Path) -> bool:
    return _classify(path) == "safetensors"


def detect_mlx(path: Path) -> bool:
    return _classify(path) == "mlx"


def inspect_safetensors(path: Path) -> dict[str, Any]:
    return _inspect(path, mlx=False)


def inspect_mlx(path: Path) -> dict[str, Any]:
    return _inspect(path, mlx=True)


def _detect_pickle(path: Path) -> bool:
    from .pickles import detect

    return detect(path)


def _refuse_pickle(path: Path) -> dict[str, Any]:
    from .pickles import inspect

    return inspect(path)


def _convert_pickle(path: Path, dest: Path) -> None:
    from .convert import convert

    convert(path, dest)


@hookimpl
def impetus_register_model_formats(registry: PluginRegistry[ModelFormat]) -> None:
    registry.add(
        ModelFormat(
            name="safetensors",
            detect=detect_safetensors,
            inspect=inspect_safetensors,
            description="Hugging Face transformers folders: config.json, *.safetensors, tokenizer files",
        )
    )
    registry.add(
        ModelFormat(name="mlx", detect=detect_mlx, inspect=inspect_mlx, description="mlx-lm folders (as mlx_lm.convert writes them), quantized or not")
    )
    registry.add(
        ModelFormat(
            name="pytorch-pickle",
            detect=_detect_pickle,
            inspect=_refuse_pickle,
            convert=_convert_pickle,
            description="refused with PickleRefused (pickles run code when loaded); converted to safetensors on request (import --convert-pickle)",
        )
    )
