"""An MLX model split across a ring group of processes (``models.load`` ``ranks``).

Every rank holds a tensor-parallel shard (mlx-lm's ``Model.shard``) and must run the
same forward passes in the same order, since each layer ends in a collective sum.
Rank 0 (the worker) serves; for each request it sends the followers a ``Command`` (the
request with its prompt tokens and a seed) on their stdin, and all ranks run the same
``MLXEngine.generate``. What only rank 0 knows (a cancellation) reaches the others
through ``Lockstep.agree``, one collective at every point where the engine asks whether
to stop: between prefill chunks and after each token. The rest (end of text, token
limit, stop sequences, grammars) every rank decides alike from the same tokens.
Every collective runs on mlx-lm's generation stream, which executes in order: a stop
decision or an embedding on another stream could run its sums while the generation's
next step (which ``generate_step`` queues before it hands over a token) runs its own,
in another order on each rank, and the ranks would add up parts of different sums (an
embedding after a request came out wrong that way, one time in several). Each command
ends by waiting for that stream, so the next starts with nothing in flight.

One request at a time (no batching) and no prompt caches: the ranks would have to agree
on every batch and cache decision too. A failure partway through a request leaves the
ranks out of step, so it ends the worker (``on_fatal``) and the model reloads.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import Any, Literal

import mlx.core as mx
import msgspec
from mlx_lm.generate import generation_stream

from impetusd.plugin_api import (
    DetokenizeOutput,
    DetokenizeRequest,
    EmbedOutput,
    EmbedRequest,
    EngineInfo,
    EngineResult,
    GenerateRequest,
    ModelSpec,
    TextSink,
    TokenizeOutput,
    TokenizeRequest,
)

from .engine import MLXEngine
from .group import Group

log = logging.getLogger(__name__)

# A collective broke in rank 0: how long to wait for a follower's death to be seen, so the
# error names the rank that died rather than rank 0 (which only saw its peer go).
LOST_WAIT_S = 2.0


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """Rank 0 → a follower: run this, in step with every rank."""

    op: Literal["generate", "embed", "warm_up"]
    request: GenerateRequest | None = None
    ids: list[int] | None = None  # the prompt's tokens, as rank 0 encoded them
    embed: EmbedRequest | None = None


class Lockstep:
    """One collective per stop decision: rank 0's answer, the same on every rank."""

    def __init__(self, group: Any) -> None:
        self.group = group

    def agree(self, stop: bool) -> bool:
        with mx.stream(generation_stream):  # after the step in flight, on every rank
            flag = mx.distributed.all_sum(mx.array([1 if stop else 0], dtype=mx.int32), group=self.group)
            return bool(flag.item())

    def follow(self) -> Callable[[], bool]:
        return lambda: self.agree(False)


def join(spec: ModelSpec) -> tuple[MLXEngine, Any]:
    """Meet the other ranks (``MLX_RANK``, ``MLX_HOSTFILE``), load the model and keep this rank's shard."""
    group = mx.distributed.init(backend="ring", strict=True)
    engine = MLXEngine.load(spec, shard=lambda model: model.shard(group))
    engine.details["ranks"] = group.size()
    return engine, group


def run(engine: MLXEngine, lockstep: Lockstep, cmd: Command, on_text: TextSink, should_stop: Callable[[], bool]) -> EngineResult | EmbedOutput | None:
    """``cmd`` on this rank: every rank calls this with the same command."""
    try:
        with mx.stream(generation_stream):
            if cmd.op == "generate":
                assert cmd.request is not None
                return engine.generate(cmd.request, on_text, should_stop, ids=cmd.ids)
            if cmd.op == "embed":
                assert cmd.embed is not None
                return engine.embed(cmd.embed)
            engine.warm_up()
            return None
    finally:
        mx.synchronize(generation_stream)  # the step generate_step queued past the last token


def _exit_worker(reason: str) -> None:
    log.error("%s", reason)
    os._exit(70)


class ShardedEngine:
    """Rank 0: the worker's engine. Followers are started, met and sharded in ``load``."""

    def __init__(self, spec: ModelSpec) -> None:
        ranks = spec.options.ranks if spec.options else 1
        self.on_fatal: Callable[[str], None] = _exit_worker
        started = time.monotonic()
        self.ring = Group(ranks, msgspec.json.encode(spec))
        self.ring.watch(lambda reason: self.on_fatal(reason))  # also while loading: a follower that fails to start
        self.engine, group = join(spec)
        os.unlink(self.ring.hostfile)  # every rank has read it
        self.lockstep = Lockstep(group)
        self.engine.details["rank_pids"] = [os.getpid(), *self.ring.pids()]
        self.engine.load_ms = (time.monotonic() - started) * 1000

    @classmethod
    def load(cls, spec: ModelSpec) -> ShardedEngine:
        return cls(spec)

    def _together(self, cmd: Command, on_text: TextSink, should_stop: Callable[[], bool]) -> Any:
        self.ring.broadcast(msgspec.json.encode(cmd))
        try:
            return run(self.engine, self.lockstep, cmd, on_text, should_stop)
        except BaseException as exc:  # a follower died, or the followers went on without us
            self.on_fatal(self.ring.lost(LOST_WAIT_S) or f"MLX rank 0 failed partway through {cmd.op}, leaving the ring group out of step: {exc!r}")
            raise

    def generate(self, req: GenerateRequest, on_text: TextSink, should_stop: Callable[[], bool]) -> EngineResult:
        ids = self.engine.prompt_ids(req)  # refusals (context length) before any rank starts
        self.engine.logits_processors(req, 1)  # and a bad logit_bias
        if req.sampling.seed is None:  # every rank must draw the same tokens
            req = msgspec.structs.replace(req, sampling=msgspec.structs.replace(req.sampling, seed=secrets.randbits(31)))
        result = self._together(Command(op="generate", request=req, ids=ids), on_text, lambda: self.lockstep.agree(should_stop()))
        assert isinstance(result, EngineResult)
        return result

    def embed(self, req: EmbedRequest) -> EmbedOutput:
        self.engine.embed_inputs(req)  # refusals (context length) before any rank starts
        out = self._together(Command(op="embed", embed=req), lambda *_: None, lambda: False)
        assert isinstance(out, EmbedOutput)
        return out

    def warm_up(self) -> None:
        self._together(Command(op="warm_up"), lambda *_: None, lambda: False)

    def info(self) -> EngineInfo:
        info = self.engine.info()
        return msgspec.structs.replace(info, details={**info.details, "max_batch": 1})

    def tokenize(self, req: TokenizeRequest) -> TokenizeOutput:
        return self.engine.tokenize(req)

    def detokenize(self, req: DetokenizeRequest) -> DetokenizeOutput:
        return self.engine.detokenize(req)
