"""The dashboard's live feeds: one daemon request on a connection of its own, its
notifications and its end relayed to the page as SSE events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec

from impetusd.protocol.framing import LineReader

from ...aclient import MAX_LINE
from ..http import sse


async def relay(path: str, method: str, params: Any, note: str) -> AsyncIterator[bytes]:
    """One daemon request on its own connection; each ``note`` notification's
    params become an SSE event, then the result (or the error) a last one.
    Leaving (the browser went away) closes the connection, which ends the request."""
    try:
        stream = await anyio.connect_unix(path)
    except OSError:
        yield sse({"error": f"no daemon answers on {path}"})
        return
    try:
        await stream.send(msgspec.json.encode({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}) + b"\n")
        reader = LineReader(stream, MAX_LINE)
        while (line := await reader.receive_line()) is not None:
            msg = msgspec.json.decode(line)
            if msg.get("method") == note:
                yield sse(msg["params"])
            elif "result" in msg or "error" in msg:
                yield sse({"final": True, **msg})
                return
        yield sse({"error": "the daemon closed the connection"})
    finally:
        with anyio.CancelScope(shield=True):
            await stream.aclose()
