"""A bounded GGUF header reader: scalar metadata and tensor shapes, nothing else.

The ``gguf`` package materialises every array (49k vocabulary strings take
seconds); the daemon only needs a few scalars, so this walks the header once,
skipping arrays, and checks every length against the file before trusting it.
"""

from __future__ import annotations

import mmap
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

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9


class GGUFError(ValueError):
    """The file is not a well-formed GGUF header."""


class GGUFHeader:
    def __init__(self, version: int, metadata: dict[str, Any], tensors: dict[str, tuple[int, tuple[int, ...]]]) -> None:
        self.version = version
        self.metadata = metadata  # arrays appear as {"array_of": type, "length": n}
        self.tensors = tensors  # name -> (ggml type, shape)


class _Cursor:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0
        self.size = len(buf)

    def take(self, n: int) -> int:
        if n < 0 or self.pos + n > self.size:
            raise GGUFError(f"header runs past the end of the file at byte {self.pos}")
        start = self.pos
        self.pos += n
        return start

    def scalar(self, fmt: str) -> Any:
        start = self.take(struct.calcsize(fmt))
        return struct.unpack_from(fmt, self.buf, start)[0]

    def string(self, limit: int = MAX_STRING) -> str:
        n = self.scalar("<Q")
        if n > limit:
            raise GGUFError(f"string of {n} bytes at byte {self.pos} exceeds the limit")
        start = self.take(n)
        return bytes(self.buf[start : start + n]).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = self.scalar("<Q")
        if n > MAX_STRING:
            raise GGUFError(f"string of {n} bytes exceeds the limit")
        self.take(n)

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
                self.take(count * struct.calcsize(_SCALARS[etype]))
            elif etype == STRING:
                for _ in range(count):
                    self.skip_string()
            else:
                raise GGUFError(f"unsupported array element type {etype}")
            return {"array_of": etype, "length": count}
        raise GGUFError(f"unknown metadata value type {vtype}")


def read_header(path: Path) -> GGUFHeader:
    with path.open("rb") as fh:
        try:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as exc:  # empty file
            raise GGUFError("empty file") from exc
    with buf:
        cur = _Cursor(buf)
        if bytes(buf[cur.take(4) : 4]) != MAGIC:
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
        for _ in range(n_tensors):
            name = cur.string(MAX_KEY)
            n_dims = cur.scalar("<I")
            if n_dims > MAX_DIMS:
                raise GGUFError(f"tensor {name!r} has {n_dims} dimensions")
            shape = tuple(cur.scalar("<Q") for _ in range(n_dims))
            ggml_type = cur.scalar("<I")
            cur.scalar("<Q")  # data offset
            tensors[name] = (ggml_type, shape)
        return GGUFHeader(version, meta, tensors)
