"""Allocation failures in a backend: free idle models, retry once, then give up typed."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Awaitable, Callable

import anyio

from impetusd.plugin.engine import GenerateRequest
from impetusd.protocol.errors import InsufficientMemory
from impetusd.workers.messages import GenerateDone

if TYPE_CHECKING:
    from impetusd.daemon import Daemon
    from impetusd.residency.manager import Resident

log = logging.getLogger(__name__)


async def generate_with_retry(
    daemon: Daemon,
    resident: Resident,
    request: GenerateRequest,
    on_text: Callable[[str], Awaitable[None]],
    cancel_requested: anyio.Event,
) -> GenerateDone:
    """``worker.generate``; on ``InsufficientMemory`` before any text was sent,
    unload the other models that are idle and try once more."""
    streamed = False

    async def track(text: str) -> None:
        nonlocal streamed
        streamed = True
        await on_text(text)

    try:
        return await resident.worker.generate(request, track, cancel_requested)
    except InsufficientMemory as exc:
        if streamed:
            raise  # a retry would repeat text the client already has
        freed = await daemon.models.unload_idle(keep=resident.spec.name)
        log.warning("%s: allocation failed (%s); unloaded %s and retrying once", resident.spec.name, exc.message, freed or "nothing")
    try:
        return await resident.worker.generate(request, on_text, cancel_requested)
    except InsufficientMemory as exc:
        raise InsufficientMemory(
            f"{resident.spec.name}: not enough memory, also after unloading idle models ({exc.message})",
            model=resident.spec.name,
            unloaded=freed,
            retried=True,
        ) from None
