"""A bounded SafeTensors header reader: names, dtypes, shapes and offsets, never data.

A file is an 8-byte little-endian header length N, N bytes of JSON (an object of
tensor name -> {dtype, shape, data_offsets}, plus an optional ``__metadata__``
object of strings), then the data buffer. Every claim the header makes is checked
against the file before it is trusted: the length against a cap and the file
size, each dtype against the known set, each shape's byte size against its
offsets, and the offsets against each other (contiguous, no overlap, no holes,
ending exactly at the end of the file), as the reference implementation demands.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import msgspec

from impetusd.plugin_api import InvalidModelFile

MAX_HEADER = 100 << 20  # bytes of header JSON
MAX_TENSORS = 1 << 17  # per file
MAX_DIMS = 8

# Bits per element, by SafeTensors dtype name.
DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}


class _Entry(msgspec.Struct, forbid_unknown_fields=True):
    dtype: str
    shape: list[int]
    data_offsets: tuple[int, int]


class TensorInfo(msgspec.Struct, frozen=True):
    """One tensor as the header describes it; offsets are relative to the data buffer."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def count(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n


class SafetensorsHeader(msgspec.Struct, frozen=True):
    path: str
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    header_bytes: int  # N
    data_bytes: int


def _refuse(path: Path, why: str) -> InvalidModelFile:
    return InvalidModelFile(f"{path}: not a valid safetensors file ({why})", path=str(path), format="safetensors")


def read_header(path: Path) -> SafetensorsHeader:
    """Read and check ``path``'s header. Raises InvalidModelFile naming the path."""
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < 8:
            raise _refuse(path, f"{size} bytes is shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > MAX_HEADER:
            raise _refuse(path, f"header length {n} exceeds the {MAX_HEADER}-byte limit")
        if 8 + n > size:
            raise _refuse(path, f"header length {n} runs past the end of the {size}-byte file")
        raw = fh.read(n)
    if len(raw) != n:
        raise _refuse(path, "the file shrank while being read")
    try:
        doc = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec raises the latter for bad UTF-8
        raise _refuse(path, f"header is not JSON: {exc}") from None
    except RecursionError:
        raise _refuse(path, "header JSON is nested too deeply") from None
    if not isinstance(doc, dict):
        raise _refuse(path, "header is not a JSON object")
    meta = doc.pop("__metadata__", None) or {}  # MLX writes null when it has none
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _refuse(path, "__metadata__ is not an object of strings")
    if len(doc) > MAX_TENSORS:
        raise _refuse(path, f"{len(doc)} tensors exceeds the limit of {MAX_TENSORS}")
    data_bytes = size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    for name, value in doc.items():
        try:
            entry = msgspec.convert(value, _Entry)
        except msgspec.ValidationError as exc:
            raise _refuse(path, f"tensor {name!r}: {exc}") from None
        bits = DTYPE_BITS.get(entry.dtype)
        if bits is None:
            raise _refuse(path, f"tensor {name!r} has unknown dtype {entry.dtype!r}")
        if len(entry.shape) > MAX_DIMS or any(d < 0 for d in entry.shape):
            raise _refuse(path, f"tensor {name!r} has an implausible shape {entry.shape}")
        start, end = entry.data_offsets
        if not 0 <= start <= end:
            raise _refuse(path, f"tensor {name!r} has offsets {start}..{end} out of order")
        info = TensorInfo(entry.dtype, tuple(entry.shape), start, end)
        total_bits = info.count * bits
        if total_bits % 8 or total_bits // 8 != end - start:
            raise _refuse(path, f"tensor {name!r}: {entry.dtype}{list(entry.shape)} needs {total_bits / 8:g} bytes, offsets span {end - start}")
        tensors[name] = info
    cursor = 0
    for name, info in sorted(tensors.items(), key=lambda kv: (kv[1].start, kv[1].end)):
        if info.start != cursor:
            what = "overlaps the tensor before it" if info.start < cursor else f"leaves a gap at byte {cursor}"
            raise _refuse(path, f"tensor {name!r} at {info.start}..{info.end} {what}")
        cursor = info.end
    if cursor != data_bytes:
        where = "past the end of the file" if cursor > data_bytes else f"short of the end of the file ({data_bytes} data bytes)"
        raise _refuse(path, f"tensor data ends at byte {cursor} of the buffer, {where}")
    return SafetensorsHeader(str(path), tensors, meta, n, data_bytes)
