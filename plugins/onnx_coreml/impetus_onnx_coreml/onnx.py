"""ONNX models: a ``.onnx`` file (a serialized ``ModelProto``), or a folder of them
(as exporters write beside config and tokenizer files) without other weights.

``inspect`` reads the header fields with the bounded protobuf reader and skips
the graph: IR version, producer, domain, model version, opset imports and
metadata properties.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from impetusd.plugin_api import InvalidModelFile

from .protowire import LEN, VARINT, Field, WireError, parse, read_top_level

# ModelProto field numbers (onnx.proto3)
IR_VERSION, PRODUCER_NAME, PRODUCER_VERSION, DOMAIN, MODEL_VERSION, DOC_STRING, GRAPH, OPSET_IMPORT = 1, 2, 3, 4, 5, 6, 7, 8
METADATA_PROPS = 14
SMALL = 1 << 16  # bytes: a string or opset entry is far smaller
MAX_PROPS = 64
OTHER_WEIGHTS = ("*.safetensors", "*.gguf")


def model_files(path: Path) -> list[Path]:
    """The ``.onnx`` files ``path`` is or holds (top level and ``onnx/``)."""
    if path.is_file():
        return [path] if path.suffix.lower() == ".onnx" else []
    if not path.is_dir() or any(next(path.glob(p), None) for p in OTHER_WEIGHTS):
        return []
    found = sorted(p for p in path.glob("*.onnx") if p.is_file()) + sorted(p for p in path.glob("onnx/*.onnx") if p.is_file())
    return sorted(found, key=lambda p: (p.name != "model.onnx", str(p)))


def detect(path: Path) -> bool:
    return bool(model_files(path))


def _text(field: Field) -> str:
    assert isinstance(field.value, bytes)
    try:
        return field.value.decode("utf-8")[:200]
    except UnicodeDecodeError:
        raise WireError(f"field {field.number} is not UTF-8 text") from None


def read_model(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as fh:
            fields = read_top_level(fh, {PRODUCER_NAME: SMALL, PRODUCER_VERSION: SMALL, DOMAIN: SMALL, OPSET_IMPORT: SMALL, METADATA_PROPS: SMALL})
        info: dict[str, Any] = {"opset": {}, "metadata_props": {}}
        graph_bytes = None
        for f in fields:
            if f.number in (IR_VERSION, MODEL_VERSION):
                if f.wire != VARINT:
                    raise WireError(f"field {f.number} is not an integer")
                info["ir_version" if f.number == IR_VERSION else "model_version"] = f.value
            elif f.number in (PRODUCER_NAME, PRODUCER_VERSION, DOMAIN, GRAPH, OPSET_IMPORT, METADATA_PROPS, DOC_STRING) and f.wire != LEN:
                raise WireError(f"field {f.number} is not length-delimited")
            elif f.number in (PRODUCER_NAME, PRODUCER_VERSION, DOMAIN):
                info[{PRODUCER_NAME: "producer_name", PRODUCER_VERSION: "producer_version", DOMAIN: "domain"}[f.number]] = _text(f)
            elif f.number == GRAPH:
                graph_bytes = f.length
            elif f.number == OPSET_IMPORT:
                entry = {g.number: g for g in parse(f.payload)}
                domain = _text(entry[1]) if 1 in entry and entry[1].wire == LEN else ""
                version = entry[2].value if 2 in entry and entry[2].wire == VARINT else None
                info["opset"][domain or "ai.onnx"] = version
            elif f.number == METADATA_PROPS and len(info["metadata_props"]) < MAX_PROPS:
                entry = {g.number: g for g in parse(f.payload)}
                if 1 in entry and entry[1].wire == LEN:
                    info["metadata_props"][_text(entry[1])] = _text(entry[2]) if 2 in entry and entry[2].wire == LEN else ""
    except WireError as exc:
        raise InvalidModelFile(f"{file}: not a valid ONNX model ({exc})", path=str(file), format="onnx") from None
    if "ir_version" not in info or graph_bytes is None:
        raise InvalidModelFile(f"{file}: not an ONNX model (no ir_version or no graph)", path=str(file), format="onnx")
    info["graph_bytes"] = graph_bytes
    return info


def inspect(path: Path) -> dict[str, Any]:
    files = model_files(path)
    primary = read_model(files[0])
    names = [f.relative_to(path).as_posix() if path.is_dir() else f.name for f in files]
    info = {"name": path.stem if path.is_file() else path.name, **primary, "models": names, "size_bytes": sum(f.stat().st_size for f in files)}
    if path.is_dir():
        info["files"] = names  # what an import registers (a file imports as itself)
    return info
