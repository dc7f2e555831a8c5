"""The safetensors format plugin: Hugging Face and mlx-lm folders written by the
real writers, hostile headers, PyTorch pickles, and the daemon's answers for each."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from helpers import DaemonProcess
from impetusd.protocol.errors import InvalidModelFile, PickleRefused
from safetensors_factory import raw_safetensors, write_hf_llama, write_mlx_llama


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One of each kind, written once (mlx-lm and transformers take seconds to import)."""
    root = tmp_path_factory.mktemp("folders")
    write_hf_llama(root / "hf")
    write_hf_llama(root / "hf-sharded", shards=3)
    write_mlx_llama(root / "mlx-q4")
    write_mlx_llama(root / "mlx-f32", bits=None)
    return {p.name: p for p in root.iterdir()}


def _classify(path: Path) -> list[str]:
    """Every registered format that claims ``path``: must be exactly one."""
    import impetus_gguf
    import impetus_safetensors as st
    from impetus_safetensors import pickles

    claims = {
        "gguf": impetus_gguf.detect(path), "safetensors": st.detect_safetensors(path),
        "mlx": st.detect_mlx(path), "pytorch-pickle": pickles.detect(path),
    }
    return [name for name, hit in claims.items() if hit]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --- detect / inspect --------------------------------------------------------------------
@pytest.mark.parametrize("shards", [1, 3])
def test_hf_folder_inspect_matches_what_was_written(tmp_path: Path, shards: int) -> None:
    import impetus_safetensors as st

    folder = tmp_path / "hf"
    written = write_hf_llama(folder, shards=shards)
    (folder / "README.md").write_text("card")  # files the model does not need
    (folder / ".gitattributes").write_text("*")
    (folder / "consolidated.safetensors").write_bytes(b"not part of the model")
    if shards == 1:
        (folder / "consolidated.safetensors").unlink()
    assert _classify(folder) == ["safetensors"]
    meta = st.inspect_safetensors(folder)
    expected_params = sum(_count(shape) for _, shape in written.values())
    assert meta["parameters"] == expected_params and meta["tensors"] == len(written)
    assert meta["architecture"] == "llama" and meta["model_class"] == "LlamaForCausalLM"
    assert (meta["context_length"], meta["vocab_size"], meta["embedding_length"], meta["block_count"]) == (2048, 96, 64, 2)
    assert meta["quantization"] == "F16" and meta["dtypes"] == ["F16", "F32"] and meta["quantized_bits"] == []
    assert meta["chat_template"] is True  # inline in tokenizer_config.json
    weights = ["model.safetensors"] if shards == 1 else [f"model-{i:05d}-of-00003.safetensors" for i in (1, 2, 3)]
    index = [] if shards == 1 else ["model.safetensors.index.json"]
    assert meta["files"] == sorted(["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", *weights, *index])
    assert meta["shards"] == shards and meta["written_by"] == "pt"
    assert meta["size_bytes"] == sum((folder / f).stat().st_size for f in meta["files"])


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def test_mlx_quantized_folder_counts_unpacked_parameters(folders: dict[str, Path]) -> None:
    import impetus_safetensors as st

    folder = folders["mlx-q4"]
    assert _classify(folder) == ["mlx"]
    meta = st.inspect_mlx(folder)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    float_params = sum(_count(s) for s in __import__("safetensors_factory").llama_shapes().values())
    # packed U32 weights counted as 32/bits values each; scales and biases are not parameters
    assert meta["parameters"] == float_params == index["metadata"]["total_parameters"]
    assert meta["quantized_bits"] == [4, 8] and meta["group_size"] == 32  # lm_head at 8 bits
    assert meta["quantization"] == "4bit+8bit-g32" and meta["written_by"] == "mlx"
    assert "U32" in meta["dtypes"] and meta["architecture"] == "llama"
    assert meta["chat_template"] is True  # chat_template.jinja, as transformers saves it
    assert "chat_template.jinja" in meta["files"] and "model.safetensors.index.json" in meta["files"]


def test_unquantized_mlx_folder_is_mlx_by_its_metadata(folders: dict[str, Path], tmp_path: Path) -> None:
    import impetus_safetensors as st

    folder = folders["mlx-f32"]
    assert "quantization" not in json.loads((folder / "config.json").read_text())
    assert _classify(folder) == ["mlx"]
    meta = st.inspect_mlx(folder)
    assert meta["quantization"] == "F32" and meta["quantized_bits"] == [] and meta["parameters"] == 86336
    # the same weights re-saved with transformers' metadata make it a safetensors folder
    other = _copy(folder, tmp_path / "resaved")
    from safetensors.numpy import load_file, save_file

    save_file(load_file(str(other / "model.safetensors")), str(other / "model.safetensors"), metadata={"format": "pt"})
    assert _classify(other) == ["safetensors"]


def test_mixed_bits_mismatch_is_refused(folders: dict[str, Path], tmp_path: Path) -> None:
    """A config that lies about bits cannot pass the packed-shape check."""
    import impetus_safetensors as st

    folder = _copy(folders["mlx-q4"], tmp_path / "lying")
    config = json.loads((folder / "config.json").read_text())
    del config["quantization"]["lm_head"]  # lm_head is packed at 8 bits; the config now says 4
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidModelFile, match="lm_head.weight"):
        st.inspect_mlx(folder)


def test_chat_template_absent(tmp_path: Path) -> None:
    import impetus_safetensors as st

    folder = tmp_path / "plain"
    write_hf_llama(folder, tokenizer=False)
    meta = st.inspect_safetensors(folder)
    assert meta["chat_template"] is False and meta["tokenizer"] is None
    assert meta["files"] == ["config.json", "generation_config.json", "model.safetensors"]


def test_not_a_model_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert _classify(tmp_path) == []  # config but no weights
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").unlink()
    assert _classify(tmp_path) == []  # weights but no config


# --- pickles ------------------------------------------------------------------------------
def test_pickle_files_and_folders_are_refused(tmp_path: Path) -> None:
    import pickle

    from impetus_safetensors import pickles

    raw = tmp_path / "model.pt"
    raw.write_bytes(pickle.dumps({"w": [1.0]}, protocol=4))
    zipped = tmp_path / "pytorch_model.bin"
    zipped.write_bytes(b"PK\x03\x04" + b"\0" * 60)
    for path in (raw, zipped):
        assert _classify(path) == ["pytorch-pickle"]
        with pytest.raises(PickleRefused, match="run arbitrary code") as info:
            pickles.inspect(path)
        assert info.value.fields["path"] == str(path)
    folder = tmp_path / "torch-only"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    shutil.copy(zipped, folder / "pytorch_model-00001-of-00002.bin")
    shutil.copy(raw, folder / "pytorch_model-00002-of-00002.bin")
    assert _classify(folder) == ["pytorch-pickle"]
    with pytest.raises(PickleRefused) as info:
        pickles.inspect(folder)
    assert info.value.fields["files"] == ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    other = tmp_path / "notes.bin"
    other.write_bytes(b"GGUF....")  # not pickled: not claimed by the refusal
    assert "pytorch-pickle" not in _classify(other)


def test_folder_with_both_weights_is_safetensors(tmp_path: Path) -> None:
    folder = tmp_path / "both"
    write_hf_llama(folder, tokenizer=False)
    (folder / "pytorch_model.bin").write_bytes(b"PK\x03\x04" + b"\0" * 60)
    assert _classify(folder) == ["safetensors"]
    import impetus_safetensors as st

    assert "pytorch_model.bin" not in st.inspect_safetensors(folder)["files"]


# --- hostile headers ----------------------------------------------------------------------
F32_4 = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}


def _raw(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


HOSTILE = {
    "empty": lambda p: _raw(p, b""),
    "short_length": lambda p: _raw(p, b"\x10\x00\x00"),
    "length_past_end": lambda p: raw_safetensors(p, {"a": F32_4}, bytes(16), length=10_000),
    "length_2gb": lambda p: raw_safetensors(p, {"a": F32_4}, bytes(16), length=2 << 30),
    "not_json": lambda p: raw_safetensors(p, b"{not json", bytes(16)),
    "not_an_object": lambda p: raw_safetensors(p, b"[1, 2, 3]", b""),
    "bad_dtype": lambda p: raw_safetensors(p, {"a": {**F32_4, "dtype": "Q7"}}, bytes(16)),
    "overlapping": lambda p: raw_safetensors(p, {"a": F32_4, "b": {**F32_4, "data_offsets": [8, 24]}}, bytes(24)),
    "gap": lambda p: raw_safetensors(p, {"a": {**F32_4, "data_offsets": [4, 20]}}, bytes(20)),
    "reversed": lambda p: raw_safetensors(p, {"a": {**F32_4, "data_offsets": [16, 0]}}, bytes(16)),
    "past_the_end": lambda p: raw_safetensors(p, {"a": {**F32_4, "shape": [8], "data_offsets": [0, 32]}}, bytes(16)),
    "shape_vs_span": lambda p: raw_safetensors(p, {"a": {**F32_4, "shape": [3]}}, bytes(16)),
    "trailing_bytes": lambda p: raw_safetensors(p, {"a": F32_4}, bytes(20)),
    "negative_dim": lambda p: raw_safetensors(p, {"a": {**F32_4, "shape": [-4]}}, bytes(16)),
    "bad_metadata": lambda p: raw_safetensors(p, {"__metadata__": {"format": 1}, "a": F32_4}, bytes(16)),
    "extra_field": lambda p: raw_safetensors(p, {"a": {**F32_4, "evil": 1}}, bytes(16)),
    "huge_count": lambda p: raw_safetensors(p, {f"t{i}": 0 for i in range((1 << 17) + 1)}, b""),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_header_is_refused(tmp_path: Path, case: str) -> None:
    from impetus_safetensors.reader import read_header

    path = HOSTILE[case](tmp_path / "model.safetensors")
    with pytest.raises(InvalidModelFile) as info:
        read_header(path)
    assert info.value.fields["path"] == str(path)


def test_header_length_cap_is_checked_before_reading(tmp_path: Path) -> None:
    """A 2 GiB header claim in a (sparse) file that long is refused by the cap, unread."""
    from impetus_safetensors.reader import MAX_HEADER, read_header

    path = tmp_path / "sparse.safetensors"
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", 2 << 30))
        fh.truncate((2 << 30) + 4096)
    with pytest.raises(InvalidModelFile, match=f"exceeds the {MAX_HEADER}-byte limit"):
        read_header(path)


def test_good_raw_header_is_read(tmp_path: Path) -> None:
    """The hand-written files above differ from this one only in what is wrong with them."""
    from impetus_safetensors.reader import read_header

    header = {"__metadata__": None, "a": F32_4, "b": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [16, 28]}, "z": {"dtype": "U8", "shape": [0], "data_offsets": [28, 28]}}
    got = read_header(raw_safetensors(tmp_path / "ok.safetensors", header, bytes(28)))
    assert {n: (t.dtype, t.shape, t.start, t.end) for n, t in got.tensors.items()} == {
        "a": ("F32", (4,), 0, 16), "b": ("BF16", (2, 3), 16, 28), "z": ("U8", (0,), 28, 28)
    }
    assert got.metadata == {} and got.data_bytes == 28


def test_oversized_and_hostile_json_files(folders: dict[str, Path], tmp_path: Path) -> None:
    import impetus_safetensors as st

    folder = _copy(folders["hf-sharded"], tmp_path / "big-config")
    (folder / "config.json").write_bytes(b'{"pad": "' + b"x" * (5 << 20) + b'"}')
    with pytest.raises(InvalidModelFile, match="limit") as info:
        st.detect_mlx(folder)
    assert info.value.fields["path"] == str(folder / "config.json")
    folder = _copy(folders["hf-sharded"], tmp_path / "escape")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../../escape.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(InvalidModelFile, match="not a safetensors file in the folder"):
        st.inspect_safetensors(folder)
    folder = _copy(folders["hf-sharded"], tmp_path / "unmapped")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    del index["weight_map"][first]
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(InvalidModelFile, match="omits"):
        st.inspect_safetensors(folder)


# --- through the daemon -------------------------------------------------------------------
@pytest.fixture(scope="module")
def daemon_without_mlx(tmp_path_factory: pytest.TempPathFactory):
    d = DaemonProcess(tmp_path_factory.mktemp("nomlx"), config='disabled_plugins = ["mlx"]\n').start()
    yield d
    d.stop()


@pytest.mark.parametrize("kind,fmt", [("hf", "safetensors"), ("hf-sharded", "safetensors"), ("mlx-q4", "mlx"), ("mlx-f32", "mlx")])
def test_daemon_answers_no_backend_for_folders(daemon_without_mlx: DaemonProcess, folders: dict[str, Path], kind: str, fmt: str) -> None:
    """Without a backend that runs folders (the MLX plugin disabled), loading says so."""
    with daemon_without_mlx.connect() as conn:
        err = conn.call("models.load", {"model": str(folders[kind])})["error"]
        assert err["data"]["name"] == "NoBackend" and err["data"]["format"] == fmt
        assert conn.call("daemon.health")["result"]["status"] == "ok"
        assert {"safetensors", "mlx", "pytorch-pickle"} <= set(conn.call("daemon.info")["result"]["formats"])


@pytest.mark.parametrize("case", ["length_2gb", "length_past_end", "overlapping", "bad_dtype", "truncated"])
def test_daemon_refuses_hostile_weights(shared_daemon: DaemonProcess, folders: dict[str, Path], tmp_path: Path, case: str) -> None:
    folder = _copy(folders["hf"], tmp_path / case)
    weights = folder / "model.safetensors"
    if case == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
    else:
        HOSTILE[case](weights)
    with shared_daemon.connect() as conn:
        err = conn.call("models.load", {"model": str(folder)})["error"]
        assert err["data"]["name"] == "InvalidModelFile" and err["data"]["path"] == str(weights)
        assert conn.call("daemon.health")["result"]["status"] == "ok"


def test_daemon_refuses_pickles(shared_daemon: DaemonProcess, tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"\x80\x04" + b"\0" * 30)
    with shared_daemon.connect() as conn:
        err = conn.call("models.load", {"model": str(path)})["error"]
        assert err["code"] == 1007 and err["data"]["name"] == "PickleRefused" and err["data"]["path"] == str(path)
        assert "safetensors" in err["message"]
        assert conn.call("daemon.health")["result"]["status"] == "ok"


def test_transformers_quantization_config_is_reported(tmp_path: Path) -> None:
    import impetus_safetensors as st

    folder = tmp_path / "gptq"
    write_hf_llama(folder, tokenizer=False)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "gptq", "bits": 4}}))
    assert _classify(folder) == ["safetensors"]  # transformers' key, not mlx-lm's
    assert st.inspect_safetensors(folder)["quantization"] == "gptq-4bit"
