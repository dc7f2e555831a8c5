"""Read the top-level fields of a protobuf message from a file, with bounds.

Both ONNX (``ModelProto``) and Core ML (``Model``) files are one serialized
protobuf message. Their small header fields (versions, producer names, opset
ids) sit beside one huge field (the graph, or the model body): this reader
walks the top-level fields with ``pread``, returning varints and the bytes of
the length-delimited fields it is asked for (each up to a cap) and skipping the
rest by their lengths, so a multi-gigabyte model costs a few reads. Anything
that is not a well-formed field sequence ending exactly at the end of the file
is a ``WireError``.
"""

from __future__ import annotations

import os
from typing import BinaryIO

VARINT, I64, LEN, I32 = 0, 1, 2, 5
MAX_FIELDS = 10_000
MAX_VARINT_BYTES = 10


class WireError(ValueError):
    """Not a well-formed protobuf message (or one past the reader's limits)."""


class Field:
    __slots__ = ("number", "wire", "value", "offset", "length")

    def __init__(self, number: int, wire: int, value: int | bytes | None, offset: int, length: int) -> None:
        self.number = number  # field number
        self.wire = wire  # wire type
        self.value = value  # the varint, the bytes (when read), or None (skipped)
        self.offset = offset  # where a LEN field's payload starts in the buffer or file
        self.length = length  # a LEN field's payload size

    @property
    def payload(self) -> bytes:
        """The bytes of a LEN field that was read (a nested message or a string)."""
        if not isinstance(self.value, bytes):
            raise WireError(f"field {self.number} holds no bytes")
        return self.value


def varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` in ``data`` and the position after it."""
    result = shift = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise WireError("truncated varint")
        byte = data[pos + i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos + i + 1
        shift += 7
    raise WireError("varint longer than 10 bytes")


def parse(data: bytes) -> list[Field]:
    """Every field of a small message held in memory (nested fields are read whole)."""
    fields: list[Field] = []
    pos = 0
    while pos < len(data):
        if len(fields) >= MAX_FIELDS:
            raise WireError(f"more than {MAX_FIELDS} fields")
        key, pos = varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == VARINT:
            value, pos = varint(data, pos)
            fields.append(Field(number, wire, value, pos, 0))
        elif wire == LEN:
            length, pos = varint(data, pos)
            if pos + length > len(data):
                raise WireError(f"field {number} runs past the end of its message")
            fields.append(Field(number, wire, data[pos : pos + length], pos, length))
            pos += length
        elif wire in (I64, I32):
            size = 8 if wire == I64 else 4
            if pos + size > len(data):
                raise WireError(f"field {number} runs past the end of its message")
            fields.append(Field(number, wire, int.from_bytes(data[pos : pos + size], "little"), pos, size))
            pos += size
        else:
            raise WireError(f"field {number} has wire type {wire}, which no current message uses")
    return fields


def read_top_level(fh: BinaryIO, wanted: dict[int, int]) -> list[Field]:
    """The file's top-level fields; LEN fields numbered in ``wanted`` are read
    (each at most ``wanted[number]`` bytes, else WireError), others skipped."""
    size = os.fstat(fh.fileno()).st_size
    fields: list[Field] = []
    pos = 0
    while pos < size:
        if len(fields) >= MAX_FIELDS:
            raise WireError(f"more than {MAX_FIELDS} top-level fields")
        head = os.pread(fh.fileno(), 2 * MAX_VARINT_BYTES, pos)
        key, used = varint(head, 0)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {pos}")
        if wire == VARINT:
            number_value, used = varint(head, used)
            fields.append(Field(number, wire, number_value, pos + used, 0))
            pos += used
        elif wire == LEN:
            length, used = varint(head, used)
            start = pos + used
            if start + length > size:
                raise WireError(f"field {number} at byte {pos} claims {length} bytes, past the end of the {size}-byte file")
            value: bytes | None = None
            if number in wanted:
                if length > wanted[number]:
                    raise WireError(f"field {number} is {length} bytes, over the {wanted[number]}-byte limit")
                value = os.pread(fh.fileno(), length, start)
            fields.append(Field(number, wire, value, start, length))
            pos = start + length
        elif wire in (I64, I32):
            step = 8 if wire == I64 else 4
            if pos + used + step > size:
                raise WireError(f"field {number} at byte {pos} runs past the end of the file")
            fields.append(Field(number, wire, int.from_bytes(head[used : used + step], "little"), pos + used, step))
            pos += used + step
        else:
            raise WireError(f"field {number} at byte {pos} has wire type {wire}, which no current message uses")
    return fields
