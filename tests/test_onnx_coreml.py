"""The ONNX and Core ML format plugin on real files: ONNX models built with the
``onnx`` helper API, Core ML specs and packages written by coremltools; and the
daemon's answer for them (described, then NoBackend saying why)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import DaemonProcess
from impetusd.protocol.errors import InvalidModelFile


def write_onnx(path: Path, *, width: int = 4) -> object:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(width * width, dtype=np.float32).reshape(width, width), name="w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        initializer=[weight],
    )
    model = helper.make_model(graph, producer_name="impetus-tests", producer_version="1.2", domain="org.example",
                              model_version=7, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    helper.set_model_props(model, {"author": "tests", "license": "MIT"})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return model


def write_mlmodel(path: Path) -> None:
    import coremltools as ct
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    builder = NeuralNetworkBuilder([("x", datatypes.Array(3))], [("y", datatypes.Array(3))])
    builder.add_activation("relu", "RELU", "x", "y")
    builder.spec.description.metadata.author = "impetus tests"
    builder.spec.description.metadata.license = "MIT"
    ct.models.MLModel(builder.spec).save(str(path))


def write_mlpackage(path: Path) -> None:
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3))])
    def program(x):
        return mb.relu(x=x, name="y")

    ct.convert(program, convert_to="mlprogram", skip_model_load=True).save(str(path))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx-coreml")
    write_onnx(root / "tiny.onnx")
    folder = root / "exported"
    folder.mkdir()
    write_onnx(folder / "model.onnx")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    write_mlmodel(root / "relu.mlmodel")
    write_mlpackage(root / "prog.mlpackage")
    return {p.name: p for p in root.iterdir()}


def _claims(path: Path) -> list[str]:
    import impetus_gguf
    import impetus_onnx_coreml as oc
    import impetus_safetensors as st
    from impetus_safetensors import pickles

    claims = {
        "gguf": impetus_gguf.detect(path), "safetensors": st.detect_safetensors(path), "mlx": st.detect_mlx(path),
        "pytorch-pickle": pickles.detect(path), "onnx": oc._detect_onnx(path), "coreml": oc._detect_coreml(path),
    }
    return [name for name, hit in claims.items() if hit]


def test_onnx_header_matches_what_onnx_reads(files: dict[str, Path]) -> None:
    import onnx

    from impetus_onnx_coreml.onnx import inspect

    meta = inspect(files["tiny.onnx"])
    model = onnx.load(str(files["tiny.onnx"]))
    assert meta["ir_version"] == model.ir_version and meta["model_version"] == 7
    assert (meta["producer_name"], meta["producer_version"], meta["domain"]) == ("impetus-tests", "1.2", "org.example")
    assert meta["opset"] == {"ai.onnx": 17, "ai.onnx.ml": 3}
    assert meta["metadata_props"] == {"author": "tests", "license": "MIT"}
    assert meta["graph_bytes"] == model.graph.ByteSize() and "files" not in meta
    assert _claims(files["tiny.onnx"]) == ["onnx"]


def test_onnx_folder(files: dict[str, Path]) -> None:
    from impetus_onnx_coreml.onnx import inspect

    assert _claims(files["exported"]) == ["onnx"]
    meta = inspect(files["exported"])
    assert meta["files"] == ["model.onnx"] and meta["opset"]["ai.onnx"] == 17


@pytest.mark.parametrize("damage", ["truncated", "not_protobuf", "no_graph"])
def test_broken_onnx_is_invalid(files: dict[str, Path], tmp_path: Path, damage: str) -> None:
    from impetus_onnx_coreml.onnx import inspect

    path = tmp_path / "broken.onnx"
    data = files["tiny.onnx"].read_bytes()
    path.write_bytes({"truncated": data[:-7], "not_protobuf": b"\xff" * 64, "no_graph": b"\x08\x07"}[damage])
    with pytest.raises(InvalidModelFile, match="ONNX"):
        inspect(path)


def test_coreml_spec_and_package(files: dict[str, Path]) -> None:
    from impetus_onnx_coreml.coreml import inspect

    spec = inspect(files["relu.mlmodel"])
    assert spec["container"] == "mlmodel" and spec["model_type"] == "neuralNetwork"
    assert spec["inputs"] == ["x"] and spec["outputs"] == ["y"] and spec["author"] == "impetus tests" and spec["license"] == "MIT"
    package = inspect(files["prog.mlpackage"])
    assert package["container"] == "mlpackage" and package["model_type"] == "mlProgram"
    assert package["specification_version"] >= 6 and package["outputs"] == ["y"]
    assert "Manifest.json" in package["files"] and "Data/com.apple.CoreML/model.mlmodel" in package["files"]
    assert _claims(files["relu.mlmodel"]) == ["coreml"] and _claims(files["prog.mlpackage"]) == ["coreml"]


def test_broken_coreml_package(files: dict[str, Path], tmp_path: Path) -> None:
    from impetus_onnx_coreml.coreml import inspect

    package = shutil.copytree(files["prog.mlpackage"], tmp_path / "bad.mlpackage")
    manifest = json.loads((package / "Manifest.json").read_text())
    root = manifest["rootModelIdentifier"]
    manifest["itemInfoEntries"][root]["path"] = "../../../etc/passwd"
    (package / "Manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidModelFile, match="inside Data"):
        inspect(package)
    (package / "Manifest.json").write_text("{")
    with pytest.raises(InvalidModelFile, match="manifest"):
        inspect(package)


@pytest.mark.parametrize("name,fmt,says", [("tiny.onnx", "onnx", "ONNX Runtime"), ("exported", "onnx", "ONNX"),
                                           ("relu.mlmodel", "coreml", "Core ML" if sys.platform == "darwin" else "Core ML exists only on Apple platforms"),
                                           ("prog.mlpackage", "coreml", "Core ML")])
def test_daemon_describes_and_answers_no_backend(shared_daemon: DaemonProcess, files: dict[str, Path], name: str, fmt: str, says: str) -> None:
    with shared_daemon.connect() as conn:
        info = conn.call("models.import", {"path": str(files[name]), "name": f"described-{name}"})["result"]
        assert info["format"] == fmt
        err = conn.call("models.load", {"model": f"described-{name}"})["error"]
        assert err["data"]["name"] == "NoBackend" and err["data"]["format"] == fmt and says in err["message"]
        assert {"onnx", "coreml"} <= set(conn.call("daemon.info")["result"]["formats"])


def test_impetusctl_show(shared_daemon: DaemonProcess, files: dict[str, Path]) -> None:
    def show(path: Path, name: str) -> str:
        with shared_daemon.connect() as conn:
            conn.call("models.import", {"path": str(path), "name": name})
        out = subprocess.run([sys.executable, "-m", "impetusctl", "--no-autostart", "show", name], env=shared_daemon.env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    onnx_out = show(files["tiny.onnx"], "shown-onnx")
    assert "producer:       impetus-tests 1.2" in onnx_out and "opset:          ai.onnx 17, ai.onnx.ml 3" in onnx_out
    coreml_out = show(files["prog.mlpackage"], "shown-coreml")
    assert "model type:     mlProgram" in coreml_out and "format:         coreml" in coreml_out
    assert "Manifest.json" in coreml_out  # the package's files are registered and listed
