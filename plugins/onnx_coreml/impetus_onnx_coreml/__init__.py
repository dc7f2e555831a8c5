"""ONNX and Core ML model formats: recognised and described, so a user learns what
a file is and that no installed backend runs it here, instead of a bare
"unrecognised file"."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from impetusd.plugin_api import ModelFormat, PluginRegistry, hookimpl


def _detect_onnx(path: Path) -> bool:
    from .onnx import detect

    return detect(path)


def _inspect_onnx(path: Path) -> dict[str, Any]:
    from .onnx import inspect

    return inspect(path)


def _detect_coreml(path: Path) -> bool:
    from .coreml import detect

    return detect(path)


def _inspect_coreml(path: Path) -> dict[str, Any]:
    from .coreml import inspect

    return inspect(path)


def coreml_hint(platform: str) -> str:
    if platform == "darwin":
        return "Impetus describes Core ML models but has no Core ML backend yet"
    return f"Core ML exists only on Apple platforms (macOS, iOS) and this machine runs {platform}"


@hookimpl
def impetus_register_model_formats(registry: PluginRegistry[ModelFormat]) -> None:
    registry.add(
        ModelFormat(
            name="onnx",
            detect=_detect_onnx,
            inspect=_inspect_onnx,
            description="ONNX models (.onnx files, or folders of them): described, not run",
            backend_hint="Impetus describes ONNX models but has no backend for them on this machine (an ONNX Runtime backend plugin would run them)",
        )
    )
    registry.add(
        ModelFormat(
            name="coreml",
            detect=_detect_coreml,
            inspect=_inspect_coreml,
            description="Core ML models (.mlpackage, .mlmodel, .mlmodelc): described, not run",
            backend_hint=coreml_hint(sys.platform),
        )
    )
