"""Newline-delimited framing over an anyio byte stream, with a size cap."""

from __future__ import annotations

import anyio
from anyio.abc import ByteReceiveStream
from anyio.streams.buffered import BufferedByteReceiveStream

from impetusd.protocol.errors import MessageTooLarge


class LineReader:
    """Reads one line at a time; a line longer than ``max_bytes`` is refused
    as soon as the cap is passed, before it is buffered whole."""

    def __init__(self, stream: ByteReceiveStream, max_bytes: int) -> None:
        self._buffered = BufferedByteReceiveStream(stream)
        self._max = max_bytes
        self.largest = 0  # bytes of the longest line (or refused prefix) seen
        self._ended = False

    async def receive_line(self) -> bytes | None:
        """The next line without its newline, or None at end of stream.

        A last line the stream ends without a newline is still a line."""
        if self._ended:
            return None
        try:
            line = await self._buffered.receive_until(b"\n", self._max)
            self.largest = max(self.largest, len(line))
            return line
        except anyio.DelimiterNotFound:
            self.largest = self._max
            raise MessageTooLarge(f"message exceeds the {self._max}-byte line limit", limit=self._max) from None
        except anyio.IncompleteRead:
            self._ended = True
            rest = self._buffered.buffer
            return rest if rest.strip() else None
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._ended = True
            return None
