"""A loaded model's residency state and rolling stats, and the eviction plan
that makes room for a new model inside the memory budget."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import anyio
import msgspec

from impetusd.plugin.engine import BackendSpec, ModelSpec
from impetusd.protocol.api import LoadedModel, MemoryBudget, MemoryEstimate
from impetusd.protocol.errors import InsufficientMemory
from impetusd.residency.budget import Budget, machine_budget, worker_rss
from impetusd.workers.handle import WorkerHandle

if TYPE_CHECKING:
    from impetusd.config import Config
    from impetusd.residency.placement import Placement

STATS_WINDOW = 20  # requests in the rolling decode rate


class RollingStats:
    """Token counts since the load, and the decode rate over the last requests."""

    def __init__(self, window: int = STATS_WINDOW) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._decodes: deque[tuple[int, float]] = deque(maxlen=window)  # (tokens, seconds)

    def record(self, prompt_tokens: int, completion_tokens: int, decode_tps: float | None) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        if decode_tps and decode_tps > 0 and completion_tokens > 0:
            self._decodes.append((completion_tokens, completion_tokens / decode_tps))

    def decode_tps(self) -> float | None:
        """Tokens over decode time across the window (long answers weigh more)."""
        seconds = sum(s for _, s in self._decodes)
        return sum(t for t, _ in self._decodes) / seconds if seconds > 0 else None


class Resident:
    """A loaded model: its worker and its residency state."""

    def __init__(
        self,
        spec: ModelSpec,
        backend: BackendSpec,
        worker: WorkerHandle,
        load_ms: float,
        keep_alive: float | None,
        estimate: MemoryEstimate | None = None,
        placement: Placement | None = None,
        requested_nodes: list[str] | None = None,
    ) -> None:
        self.placement = placement  # split across compute nodes (None: this machine only)
        self.requested_nodes = requested_nodes or []  # what the load asked for (a reload without a lost node asks again)
        self.spec = spec
        self.backend = backend
        self.worker = worker
        self.loaded_at = time.time()
        self.load_ms = load_ms
        self.keep_alive = keep_alive
        self.estimate = estimate
        self.last_used = time.monotonic()
        self.in_flight = 0
        self.requests = 0
        self.stats = RollingStats()
        details = worker.info.details if worker.info is not None else {}
        warmup = details.get("warmup_ms")
        self.warmup_ms = float(warmup) if isinstance(warmup, (int, float)) else None

    def touch(self, keep_alive: float | None) -> None:
        self.keep_alive = keep_alive
        self.last_used = time.monotonic()

    @property
    def busy(self) -> bool:
        return self.in_flight > 0

    def expires_in(self) -> float | None:
        if self.keep_alive is None or self.in_flight:
            return None
        return self.keep_alive - (time.monotonic() - self.last_used)

    def memory_bytes(self, rss: int | None = None) -> int:
        """What the model counts against the budget: its estimate, or its worker's
        measured RSS when that is larger."""
        rss = worker_rss(self.worker.pid) if rss is None else rss
        return max(self.estimate.total_bytes if self.estimate else 0, rss or 0)

    def describe(self) -> LoadedModel:
        left = self.expires_in()
        rss = worker_rss(self.worker.pid)
        rate = self.stats.decode_tps()
        return LoadedModel(
            name=self.spec.name,
            path=self.spec.path,
            format=self.spec.format,
            backend=self.backend.name,
            pid=self.worker.pid,
            loaded_at=self.loaded_at,
            load_ms=round(self.load_ms, 1),
            expires_at=None if left is None else time.time() + max(left, 0.0),
            in_flight=self.in_flight,
            requests=self.requests,
            rss_bytes=rss,
            memory_bytes=self.memory_bytes(rss),
            estimate=self.estimate,
            warmup_ms=None if self.warmup_ms is None else round(self.warmup_ms, 1),
            keep_alive_s=self.keep_alive,
            expires_in_s=None if left is None else round(max(left, 0.0), 1),
            prompt_tokens=self.stats.prompt_tokens,
            completion_tokens=self.stats.completion_tokens,
            decode_tps=None if rate is None else round(rate, 2),
            last_used_at=time.time() - (time.monotonic() - self.last_used),
            engine_load_ms=None if self.worker.info is None else round(self.worker.info.load_ms, 1),
            engine=dict(self.worker.info.details) if self.worker.info else {},
            nodes=list(self.placement.shares) if self.placement else [],
            nodes_dropped=list(self.placement.dropped) if self.placement else [],
        )


class MemoryUse(msgspec.Struct, frozen=True):
    """One loaded model as the eviction plan sees it."""

    name: str
    bytes: int
    busy: bool
    last_used: float  # monotonic


class Room(msgspec.Struct, frozen=True):
    fits: bool
    evict: list[str]  # idle models to unload first, least recently used first
    used_bytes: int  # before evicting
    available_bytes: int  # after evicting every idle model the plan names
    busy: list[str]


def plan_room(needed: int, budget: int, models: Sequence[MemoryUse], reserved: int = 0) -> Room:
    """Which idle models to unload, least recently used first, so that ``needed``
    bytes fit beside the rest (and ``reserved``: loads under way). When even
    unloading every idle model would not be enough, nothing is to be unloaded."""
    used = reserved + sum(m.bytes for m in models)
    busy = sorted(m.name for m in models if m.busy)
    free = budget - used
    evict: list[str] = []
    for m in sorted((m for m in models if not m.busy), key=lambda m: m.last_used):
        if free >= needed:
            break
        evict.append(m.name)
        free += m.bytes
    fits = free >= needed
    return Room(fits=fits, evict=evict if fits else [], used_bytes=used, available_bytes=max(free, 0), busy=busy)


class MemoryLedger:
    """The budget, the loads under way, and the decision that makes room."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.reserved: dict[str, int] = {}  # model name -> estimate, while its load is under way
        self.working_set: int | None = None  # an accelerator's recommended working set, once a worker reports it
        self._lock = anyio.Lock()  # one fit-check-and-evict at a time

    def budget(self) -> Budget:
        if self.config.memory_budget_bytes is not None:
            return Budget(bytes=self.config.memory_budget_bytes, source="config")
        return machine_budget(self.config.memory_budget_fraction, self.working_set)

    @staticmethod
    def usages(resident: Mapping[str, Resident]) -> list[MemoryUse]:
        return [MemoryUse(name=n, bytes=r.memory_bytes(), busy=r.busy, last_used=r.last_used) for n, r in resident.items()]

    def describe(self, resident: Mapping[str, Resident]) -> MemoryBudget:
        budget = self.budget()
        used = sum(u.bytes for u in self.usages(resident)) + sum(self.reserved.values())
        return MemoryBudget(budget_bytes=budget.bytes, source=budget.source, used_bytes=used, available_bytes=max(budget.bytes - used, 0))

    def learn(self, worker: WorkerHandle) -> None:
        """A backend on an accelerator with its own memory limit (MLX on Metal)
        reports its recommended working set; the automatic budget stays under it."""
        details = worker.info.details if worker.info is not None else {}
        value = details.get("recommended_working_set_bytes")
        if isinstance(value, int) and value > 0:
            self.working_set = value if self.working_set is None else min(self.working_set, value)

    def release(self, name: str) -> None:
        self.reserved.pop(name, None)

    async def reserve(self, spec: ModelSpec, need: MemoryEstimate, resident: Mapping[str, Resident], stop: Callable[[Resident], Awaitable[None]]) -> list[str]:
        """Reserve ``need`` for ``spec``'s load, stopping idle models least
        recently used first when it does not fit; ``InsufficientMemory`` when it
        cannot (then nothing is stopped). The caller calls ``release`` after the load."""
        budget = self.budget()
        mb = 1e6

        def refuse(why: str, available: int, busy: list[str], never: bool) -> InsufficientMemory:
            return InsufficientMemory(
                f"{spec.name} needs about {need.total_bytes / mb:.0f} MB and {why}",
                model=spec.name,
                needed_bytes=need.total_bytes,
                available_bytes=available,
                budget_bytes=budget.bytes,
                budget_source=budget.source,
                busy=busy,
                loading=sorted(self.reserved) if not never else [],
                never_fits=never,
                estimate=msgspec.to_builtins(need),
            )

        if need.total_bytes > budget.bytes:
            raise refuse(f"can never fit the memory budget of {budget.bytes / mb:.0f} MB ({budget.source})", budget.bytes, [], True)
        stopped: list[str] = []
        async with self._lock:
            while True:
                room = plan_room(need.total_bytes, budget.bytes, self.usages(resident), sum(self.reserved.values()))
                if not room.fits:
                    busy = f"; busy: {', '.join(room.busy)}" if room.busy else ""
                    busy += f"; loading: {', '.join(sorted(self.reserved))}" if self.reserved else ""
                    raise refuse(
                        f"only {room.available_bytes / mb:.0f} MB of the {budget.bytes / mb:.0f} MB budget"
                        f" would be free after unloading every idle model{busy}",
                        room.available_bytes,
                        room.busy,
                        False,
                    )
                if not room.evict:
                    break
                for name in room.evict:
                    victim = resident.get(name)
                    if victim is not None and not victim.busy:  # it may have got a request meanwhile
                        await stop(victim)
                        stopped.append(name)
            self.reserved[spec.name] = need.total_bytes
        return stopped
