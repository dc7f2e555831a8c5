"""Core ML models: an ``.mlpackage`` folder (``Manifest.json`` naming the model
spec under ``Data/``), an ``.mlmodel`` file (a serialized ``CoreML.Specification.Model``)
or a compiled ``.mlmodelc`` folder (``coremldata.bin``; not described further).

``inspect`` reads the spec's specification version, model type (which field of
the ``Type`` oneof is set), inputs, outputs and author metadata with the bounded
protobuf reader, skipping the model body and never touching the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from impetusd.plugin_api import InvalidModelFile

from .protowire import LEN, VARINT, Field, WireError, parse, read_top_level

SPEC_VERSION, DESCRIPTION, IS_UPDATABLE = 1, 2, 10
MAX_DESCRIPTION = 1 << 20
MAX_MANIFEST = 1 << 20
# Model.Type oneof field numbers (Core ML's Model.proto)
MODEL_TYPES = {
    200: "pipelineClassifier",
    201: "pipelineRegressor",
    202: "pipeline",
    300: "glmRegressor",
    301: "supportVectorRegressor",
    302: "treeEnsembleRegressor",
    303: "neuralNetworkRegressor",
    304: "bayesianProbitRegressor",
    400: "glmClassifier",
    401: "supportVectorClassifier",
    402: "treeEnsembleClassifier",
    403: "neuralNetworkClassifier",
    404: "kNearestNeighborsClassifier",
    500: "neuralNetwork",
    501: "itemSimilarityRecommender",
    502: "mlProgram",
    555: "customModel",
    556: "linkedModel",
    560: "classConfidenceThresholding",
    900: "identity",
    2000: "textClassifier",
    2001: "wordTagger",
    2002: "visionFeaturePrint",
    2003: "soundAnalysisPreprocessing",
    2004: "gazetteer",
    2005: "wordEmbedding",
    2006: "audioFeaturePrint",
}
# ModelDescription: input = 1, output = 10; Metadata = 100 (shortDescription 1, versionString 2, author 3, license 4)
INPUT, OUTPUT, METADATA = 1, 10, 100
METADATA_KEYS = {1: "description", 2: "version", 3: "author", 4: "license"}


def kind_of(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix == ".mlpackage" and path.is_dir() and (path / "Manifest.json").is_file():
        return "mlpackage"
    if suffix == ".mlmodel" and path.is_file():
        return "mlmodel"
    if suffix == ".mlmodelc" and path.is_dir() and (path / "coremldata.bin").is_file():
        return "mlmodelc"
    return None


def detect(path: Path) -> bool:
    return kind_of(path) is not None


def _text(field: Field) -> str:
    if field.wire != LEN or not isinstance(field.value, bytes):
        raise WireError(f"field {field.number} is not text")
    try:
        return field.value.decode("utf-8")[:200]
    except UnicodeDecodeError:
        raise WireError(f"field {field.number} is not UTF-8 text") from None


def _description(raw: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"inputs": [], "outputs": []}
    for f in parse(raw):
        if f.number in (INPUT, OUTPUT) and f.wire == LEN:
            names = [_text(g) for g in parse(f.payload) if g.number == 1]
            out["inputs" if f.number == INPUT else "outputs"].extend(names[:1])
        elif f.number == METADATA and f.wire == LEN:
            for g in parse(f.payload):
                if g.number in METADATA_KEYS and g.wire == LEN:
                    out[METADATA_KEYS[g.number]] = _text(g)
    return out


def read_spec(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as fh:
            fields = read_top_level(fh, {DESCRIPTION: MAX_DESCRIPTION})
        info: dict[str, Any] = {}
        for f in fields:
            if f.number == SPEC_VERSION and f.wire == VARINT:
                info["specification_version"] = f.value
            elif f.number == DESCRIPTION and f.wire == LEN:
                info.update(_description(f.payload))
            elif f.number == IS_UPDATABLE and f.wire == VARINT:
                info["updatable"] = bool(f.value)
            elif f.number >= 200:
                info["model_type"] = MODEL_TYPES.get(f.number, f"type-{f.number}")
    except WireError as exc:
        raise InvalidModelFile(f"{file}: not a valid Core ML model spec ({exc})", path=str(file), format="coreml") from None
    if "specification_version" not in info or "model_type" not in info:
        raise InvalidModelFile(f"{file}: not a Core ML model spec (no specification version or no model type)", path=str(file), format="coreml")
    return info


def _manifest_spec(package: Path) -> Path:
    """The model spec file ``Manifest.json``'s root item names, inside ``Data/``."""
    manifest = package / "Manifest.json"
    if manifest.stat().st_size > MAX_MANIFEST:
        raise InvalidModelFile(f"{manifest}: over the {MAX_MANIFEST}-byte limit", path=str(manifest))
    try:
        doc = json.loads(manifest.read_text())
        entry = doc["itemInfoEntries"][doc["rootModelIdentifier"]]
        relative = str(entry["path"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidModelFile(f"{manifest}: not a Core ML package manifest ({exc!r})", path=str(manifest)) from None
    data = (package / "Data").resolve()
    spec = (data / relative).resolve()
    if data not in spec.parents or not spec.is_file():
        raise InvalidModelFile(f"{manifest}: the root model {relative!r} is not a file inside Data/", path=str(manifest))
    return spec


def inspect(path: Path) -> dict[str, Any]:
    kind = kind_of(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    info: dict[str, Any] = {"name": path.stem, "container": kind, "size_bytes": sum(p.stat().st_size for p in files)}
    if kind == "mlpackage":
        info.update(read_spec(_manifest_spec(path)))
    elif kind == "mlmodel":
        info.update(read_spec(path))
    if path.is_dir():
        info["files"] = [p.relative_to(path).as_posix() for p in files]
    return info
