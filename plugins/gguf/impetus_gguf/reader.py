"""A bounded GGUF header reader: scalar metadata and tensor shapes, nothing else.

The ``gguf`` package materialises every array (49k vocabulary strings take
seconds); the daemon only needs a few scalars, so this walks the header once,
skipping arrays, and checks every count and length against the file and fixed
limits before trusting it, and every tensor's data range against the file. It
reads with ``pread`` into a small window rather than mapping the file: a file
that shrinks while it is read is a short read (a ``GGUFError``), never a SIGBUS
in the daemon. Anything wrong with the bytes is a ``GGUFError``; nothing else
is raised for any input (``tests/test_hostile_files.py`` checks that with
mutated real headers).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

MAGIC = b"GGUF"
MAX_KEY = 1 << 16
MAX_STRING = 1 << 26
MAX_ARRAY = 1 << 28
MAX_TENSORS = 1 << 20
MAX_KV = 1 << 16
MAX_DIMS = 8
WINDOW = 1 << 20
DEFAULT_ALIGNMENT = 32

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9

# ggml tensor types: (elements per block, bytes per block), for the types whose
# size is fixed; tensors of other types are only checked to start inside the file.
BLOCKS = {
    0: (1, 4),
    1: (1, 2),
    2: (32, 18),
    3: (32, 20),
    6: (32, 22),
    7: (32, 24),
    8: (32, 34),
    9: (32, 36),
    10: (256, 84),
    11: (256, 110),
    12: (256, 144),
    13: (256, 176),
    14: (256, 210),
    15: (256, 292),
    24: (1, 1),
    25: (1, 2),
    26: (1, 4),
    27: (1, 8),
    28: (1, 8),
    30: (1, 2),
}


class GGUFError(ValueError):
    """The file is not a well-formed GGUF header."""


class GGUFHeader:
    def __init__(self, version: int, metadata: dict[str, Any], tensors: dict[str, tuple[int, tuple[int, ...]]]) -> None:
        self.version = version
        self.metadata = metadata  # arrays appear as {"array_of": type, "length": n}
        self.tensors = tensors  # name -> (ggml type, shape)


class _Cursor:
    """Sequential reads from a file descriptor through a window, bounded by ``size``."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.pos = 0
        self._buf = b""
        self._buf_at = 0

    def _bytes(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise GGUFError(f"header runs past the end of the file at byte {self.pos}")
        end = self.pos + n
        if not (self._buf_at <= self.pos and end <= self._buf_at + len(self._buf)):
            self._buf = os.pread(self.fd, max(n, WINDOW), self.pos)
            self._buf_at = self.pos
            if len(self._buf) < n:
                raise GGUFError(f"the file ended early at byte {self.pos + len(self._buf)} (changed while read?)")
        start = self.pos - self._buf_at
        self.pos = end
        return self._buf[start : start + n]

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise GGUFError(f"header runs past the end of the file at byte {self.pos}")
        self.pos += n

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self._bytes(struct.calcsize(fmt)))[0]

    def string(self, limit: int = MAX_STRING) -> str:
        n = self.scalar("<Q")
        if n > limit:
            raise GGUFError(f"string of {n} bytes at byte {self.pos} exceeds the limit")
        return self._bytes(n).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = self.scalar("<Q")
        if n > MAX_STRING:
            raise GGUFError(f"string of {n} bytes exceeds the limit")
        self.skip(n)

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == STRING:
            return self.string()
        if vtype == ARRAY:
            etype = self.scalar("<I")
            count = self.scalar("<Q")
            if count > MAX_ARRAY:
                raise GGUFError(f"array of {count} items exceeds the limit")
            if etype in _SCALARS:
                self.skip(count * struct.calcsize(_SCALARS[etype]))
            elif etype == STRING:
                for _ in range(count):
                    self.skip_string()
            else:
                raise GGUFError(f"unsupported array element type {etype}")
            return {"array_of": etype, "length": count}
        raise GGUFError(f"unknown metadata value type {vtype}")


def read_header(path: Path) -> GGUFHeader:
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise GGUFError("empty file")
        return _parse(_Cursor(fh.fileno(), size))


def _parse(cur: _Cursor) -> GGUFHeader:
    if cur._bytes(4) != MAGIC:
        raise GGUFError("not a GGUF file (bad magic)")
    version = cur.scalar("<I")
    if version not in (2, 3):
        raise GGUFError(f"unsupported GGUF version {version}")
    n_tensors = cur.scalar("<Q")
    n_kv = cur.scalar("<Q")
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
        raise GGUFError(f"implausible counts: {n_tensors} tensors, {n_kv} metadata keys")
    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string(MAX_KEY)
        meta[key] = cur.value(cur.scalar("<I"))
    tensors: dict[str, tuple[int, tuple[int, ...]]] = {}
    offsets: dict[str, int] = {}
    for _ in range(n_tensors):
        name = cur.string(MAX_KEY)
        n_dims = cur.scalar("<I")
        if n_dims > MAX_DIMS:
            raise GGUFError(f"tensor {name!r} has {n_dims} dimensions")
        shape = tuple(cur.scalar("<Q") for _ in range(n_dims))
        ggml_type = cur.scalar("<I")
        offsets[name] = cur.scalar("<Q")
        tensors[name] = (ggml_type, shape)
    _check_data(cur, meta, tensors, offsets)
    return GGUFHeader(version, meta, tensors)


def _check_data(cur: _Cursor, meta: dict[str, Any], tensors: dict[str, tuple[int, tuple[int, ...]]], offsets: dict[str, int]) -> None:
    """Every tensor's data must lie inside the file, after the aligned header."""
    alignment = meta.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or not 1 <= alignment <= 1 << 16:
        raise GGUFError(f"implausible general.alignment {alignment!r}")
    data_start = -(-cur.pos // alignment) * alignment
    for name, (ggml_type, shape) in tensors.items():
        start = data_start + offsets[name]
        if start > cur.size:
            raise GGUFError(f"tensor {name!r} starts at byte {start}, past the end of the file ({cur.size} bytes)")
        block = BLOCKS.get(ggml_type)
        if block is None:
            continue
        elements = 1
        for dim in shape:
            elements *= dim
        per_block, block_bytes = block
        if shape and shape[0] % per_block:
            raise GGUFError(f"tensor {name!r}: {shape[0]} columns is not a whole number of type-{ggml_type} blocks")
        end = start + elements // per_block * block_bytes
        if end > cur.size:
            raise GGUFError(f"tensor {name!r} ends at byte {end}, past the end of the file ({cur.size} bytes)")
