"""A request's hold on its loaded model (``ModelManager.lease``), and what the
request may ask of the model's worker while it holds it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import anyio

from impetusd.protocol.errors import InsufficientMemory, NodeLost

if TYPE_CHECKING:
    from impetusd.engine.messages import DetokenizeOutput, DetokenizeRequest, EmbedRequest, GenerateRequest, TokenizeOutput, TokenizeRequest
    from impetusd.protocol.api import TokenLogprob
    from impetusd.residency.resident import Resident
    from impetusd.workers.handle import OnText
    from impetusd.workers.messages import EmbedDone, GenerateDone

log = logging.getLogger(__name__)
NODE_LOST_EXIT_S = 3.0  # a worker that lost a compute node ends itself (about 1 s); the error waits for that


class Queued(Protocol):
    """A request counted against its model's queue until it is over
    (dispatch's RequestContext runs its ``finalizers`` then)."""

    finalizers: list[Callable[[], None]]


class Lease:
    """One request's use of a resident model.

    The request counts against the model (``in_flight``, ``requests``) from its
    first call to the worker until the lease ends; a request refused before that
    (a capability its backend lacks) leaves the model as it was.
    """

    def __init__(self, resident: Resident, load_ms: float, unload_idle: Callable[[str], Awaitable[list[str]]]) -> None:
        self.resident = resident
        self.load_ms = load_ms  # what loading the model cost this request (0 when it was loaded)
        self.counted = False
        self._unload_idle = unload_idle

    def _count(self) -> None:
        if not self.counted:
            self.counted = True
            self.resident.in_flight += 1
            self.resident.requests += 1

    async def generate(self, request: GenerateRequest, on_text: OnText, cancel_requested: anyio.Event) -> GenerateDone:
        """``worker.generate``; on ``InsufficientMemory`` before any text was sent,
        unload the other models that are idle and try once more."""
        self._count()
        worker, name = self.resident.worker, self.resident.spec.name
        streamed = False

        async def track(text: str, logprobs: list[TokenLogprob] | None) -> None:
            nonlocal streamed
            streamed = True
            await on_text(text, logprobs)

        try:
            return await worker.generate(request, track, cancel_requested)
        except NodeLost:
            # the worker ends itself after a node loss: once it has, the next request
            # loads the model again (without the node) instead of meeting the dying worker
            with anyio.move_on_after(NODE_LOST_EXIT_S):
                await worker.exited.wait()
            raise
        except InsufficientMemory as exc:
            if streamed:
                raise  # a retry would repeat text the client already has
            freed = await self._unload_idle(name)
            log.warning("%s: allocation failed (%s); unloaded %s and retrying once", name, exc.message, freed or "nothing")
        try:
            return await worker.generate(request, on_text, cancel_requested)
        except InsufficientMemory as exc:
            raise InsufficientMemory(
                f"{name}: not enough memory, also after unloading idle models ({exc.message})",
                model=name,
                unloaded=freed,
                retried=True,
            ) from None

    async def embed(self, request: EmbedRequest) -> EmbedDone:
        self._count()
        return await self.resident.worker.embed(request)

    async def tokenize(self, request: TokenizeRequest) -> TokenizeOutput:
        return await self.resident.worker.tokenize(request)

    async def detokenize(self, request: DetokenizeRequest) -> DetokenizeOutput:
        return await self.resident.worker.detokenize(request)
