"""A loaded model's residency state and rolling stats, and the eviction plan
that makes room for a new model inside the memory budget."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import anyio
import msgspec

from impetusd.engine.backend import BackendSpec
from impetusd.engine.messages import ModelSpec
from impetusd.plugin.registries import HardwareMonitor
from impetusd.protocol.api import LoadedModel, MemoryBudget, MemoryEstimate
from impetusd.protocol.errors import InsufficientMemory
from impetusd.residency.budget import Budget, machine_budget, worker_rss
from impetusd.workers.handle import WorkerHandle

if TYPE_CHECKING:
    from impetusd.config import Config
    from impetusd.engine.placement import Placement

log = logging.getLogger(__name__)

STATS_WINDOW = 20  # requests in the rolling decode rate
MB = 1e6  # the unit of the refusals' messages


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
        """What the model counts against the host side of the budget: its estimate's host
        part, or its worker's measured RSS when that is larger."""
        rss = worker_rss(self.worker.pid) if rss is None else rss
        host = self.estimate.total_bytes - self.estimate.gpu_bytes if self.estimate else 0
        return max(host, rss or 0)

    def gpu_memory_bytes(self) -> int:
        """What the model counts against the GPU side: its estimate's GPU part, or what its
        engine reported holding on the GPUs when that is larger (0: nothing offloaded)."""
        planned = self.estimate.gpu_bytes if self.estimate else 0
        held = self.worker.info.details.get("gpu_memory_bytes") if self.worker.info is not None else None
        return max(planned, held if isinstance(held, int) else 0)

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
            gpu_memory_bytes=self.gpu_memory_bytes() or None,
            nodes=list(self.placement.shares) if self.placement else [],
            nodes_dropped=list(self.placement.dropped) if self.placement else [],
        )


class MemoryUse(msgspec.Struct, frozen=True):
    """One loaded model as the eviction plan sees it."""

    name: str
    bytes: int  # host memory
    busy: bool
    last_used: float  # monotonic
    gpu_bytes: int = 0


Side = Literal["host", "gpu"]


class Room(msgspec.Struct, frozen=True):
    fits: bool
    evict: list[str]  # idle models to unload first, least recently used first
    used_bytes: int  # before evicting
    available_bytes: int  # after evicting every idle model the plan names
    busy: list[str]
    short: Side | None = None  # the side that lacks room (when it does not fit)
    gpu_used_bytes: int = 0
    gpu_available_bytes: int | None = None  # None: no GPU budget


def plan_room(
    needed: int,
    budget: int,
    models: Sequence[MemoryUse],
    reserved: int = 0,
    *,
    gpu_needed: int = 0,
    gpu_budget: int | None = None,
    gpu_reserved: int = 0,
) -> Room:
    """Which idle models to unload, least recently used first, so that ``needed`` host bytes
    fit beside the rest (and ``reserved``: loads under way), and ``gpu_needed`` bytes fit the
    GPU budget beside the GPU parts of the rest. While only the GPU lacks room, models with no
    GPU part are kept. When even unloading every idle model would not be enough, nothing is
    to be unloaded, and ``short`` names the side that lacks room."""
    used = reserved + sum(m.bytes for m in models)
    gpu_used = gpu_reserved + sum(m.gpu_bytes for m in models)
    busy = sorted(m.name for m in models if m.busy)
    free = budget - used
    gpu_free = None if gpu_budget is None else gpu_budget - gpu_used

    def short() -> Side | None:
        if free < needed:
            return "host"
        if gpu_needed > 0 and gpu_free is not None and gpu_free < gpu_needed:
            return "gpu"
        return None

    evict: list[str] = []
    for m in sorted((m for m in models if not m.busy), key=lambda m: m.last_used):
        lacking = short()
        if lacking is None:
            break
        if lacking == "gpu" and m.gpu_bytes <= 0:
            continue
        evict.append(m.name)
        free += m.bytes
        gpu_free = None if gpu_free is None else gpu_free + m.gpu_bytes
    lacking = short()
    return Room(
        fits=lacking is None,
        evict=evict if lacking is None else [],
        used_bytes=used,
        available_bytes=max(free, 0),
        busy=busy,
        short=lacking,
        gpu_used_bytes=gpu_used,
        gpu_available_bytes=None if gpu_free is None else max(gpu_free, 0),
    )


class GpuBudget(msgspec.Struct, frozen=True):
    """The GPU side of the budget: the memory of the GPUs a hardware monitor reports."""

    bytes: int
    gpus: list[str]


def gpu_budget(monitors: Sequence[HardwareMonitor]) -> GpuBudget | None:
    """The GPUs of the first monitor that reports any (blocking: nvidia-smi); None when none does.
    A failing monitor counts as reporting none."""
    for monitor in monitors:
        if monitor.gpus is None:
            continue
        try:
            gpus = monitor.gpus()
        except Exception:
            log.exception("hardware monitor %s failed to list its GPUs", monitor.name)
            continue
        if gpus:
            return GpuBudget(bytes=sum(g.total_bytes for g in gpus), gpus=[g.name for g in gpus])
    return None


class MemoryLedger:
    """The budget (host memory, and GPU memory when a monitor reports GPUs), the loads
    under way, and the decision that makes room."""

    def __init__(self, config: Config, monitors: Sequence[HardwareMonitor] = ()) -> None:
        self.config = config
        self.monitors = monitors
        self.reserved: dict[str, int] = {}  # model name -> host estimate, while its load is under way
        self.gpu_reserved: dict[str, int] = {}  # model name -> GPU estimate, likewise
        self.working_set: int | None = None  # an accelerator's recommended working set, once a worker reports it
        self._gpu: GpuBudget | None = None
        self._gpu_read = False
        self._lock = anyio.Lock()  # one fit-check-and-evict at a time

    def budget(self) -> Budget:
        if self.config.memory_budget_bytes is not None:
            return Budget(bytes=self.config.memory_budget_bytes, source="config")
        return machine_budget(self.config.memory_budget_fraction, self.working_set)

    def gpu(self) -> GpuBudget | None:
        """The GPU budget, read from the monitors once (GPUs' memory does not change while
        the daemon runs; ``read_gpus`` reads it off the event loop at start)."""
        if not self._gpu_read:
            self._gpu = gpu_budget(self.monitors)
            self._gpu_read = True
        return self._gpu

    async def read_gpus(self) -> None:
        await anyio.to_thread.run_sync(self.gpu)

    @staticmethod
    def usages(resident: Mapping[str, Resident]) -> list[MemoryUse]:
        return [MemoryUse(name=n, bytes=r.memory_bytes(), busy=r.busy, last_used=r.last_used, gpu_bytes=r.gpu_memory_bytes()) for n, r in resident.items()]

    def gpu_room(self, resident: Mapping[str, Resident]) -> int:
        """GPU bytes a new load may take, idle models' evicted: the GPU budget less what busy
        models and loads under way hold (0 without GPUs)."""
        gpu = self.gpu()
        if gpu is None:
            return 0
        held = sum(u.gpu_bytes for u in self.usages(resident) if u.busy) + sum(self.gpu_reserved.values())
        return max(gpu.bytes - held, 0)

    def describe(self, resident: Mapping[str, Resident]) -> MemoryBudget:
        budget = self.budget()
        usages = self.usages(resident)
        used = sum(u.bytes for u in usages) + sum(self.reserved.values())
        gpu = self.gpu()
        gpu_used = sum(u.gpu_bytes for u in usages) + sum(self.gpu_reserved.values())
        return MemoryBudget(
            budget_bytes=budget.bytes,
            source=budget.source,
            used_bytes=used,
            available_bytes=max(budget.bytes - used, 0),
            gpu_budget_bytes=None if gpu is None else gpu.bytes,
            gpu_used_bytes=None if gpu is None else gpu_used,
            gpu_available_bytes=None if gpu is None else max(gpu.bytes - gpu_used, 0),
            gpus=[] if gpu is None else gpu.gpus,
        )

    def learn(self, worker: WorkerHandle) -> None:
        """A backend on an accelerator with its own memory limit (MLX on Metal)
        reports its recommended working set; the automatic budget stays under it."""
        details = worker.info.details if worker.info is not None else {}
        value = details.get("recommended_working_set_bytes")
        if isinstance(value, int) and value > 0:
            self.working_set = value if self.working_set is None else min(self.working_set, value)

    def release(self, name: str) -> None:
        self.reserved.pop(name, None)
        self.gpu_reserved.pop(name, None)

    async def reserve(self, spec: ModelSpec, need: MemoryEstimate, resident: Mapping[str, Resident], stop: Callable[[Resident], Awaitable[None]]) -> list[str]:
        """Reserve ``need`` for ``spec``'s load, stopping idle models least recently used
        first when it does not fit (on the host or on the GPU, whichever lacks room);
        ``InsufficientMemory`` naming the side when it cannot (then nothing is stopped).
        The caller calls ``release`` after the load."""
        load = _Load(spec=spec, need=need, budget=self.budget(), gpu=self.gpu() if need.gpu_bytes > 0 else None)
        self._check_ever_fits(load)
        stopped: list[str] = []
        async with self._lock:
            while True:
                room = self._room(load, resident)
                if not room.fits:
                    raise self._short(load, room)
                if not room.evict:
                    break
                for name in room.evict:
                    victim = resident.get(name)
                    if victim is not None and not victim.busy:  # it may have got a request meanwhile
                        await stop(victim)
                        stopped.append(name)
            self.reserved[spec.name] = load.host_need
            if need.gpu_bytes > 0:
                self.gpu_reserved[spec.name] = need.gpu_bytes
        return stopped

    def _room(self, load: _Load, resident: Mapping[str, Resident]) -> Room:
        """The plan for ``load`` beside the loaded models and the loads under way."""
        return plan_room(
            load.host_need,
            load.budget.bytes,
            self.usages(resident),
            sum(self.reserved.values()),
            gpu_needed=load.need.gpu_bytes,
            gpu_budget=None if load.gpu is None else load.gpu.bytes,
            gpu_reserved=sum(self.gpu_reserved.values()),
        )

    def _check_ever_fits(self, load: _Load) -> None:
        """Refuse at once a load larger than the whole budget of either side."""
        budget, gpu, need = load.budget, load.gpu, load.need
        if load.host_need > budget.bytes:
            raise self._refuse(load, "host", f"can never fit the memory budget of {budget.bytes / MB:.0f} MB ({budget.source})", budget.bytes, [], True)
        if gpu is not None and need.gpu_bytes > gpu.bytes:
            what = f"{need.gpu_layers} layers on the GPU" if need.gpu_layers else "its GPU part"
            why = f"can never fit the GPU budget of {gpu.bytes / MB:.0f} MB ({', '.join(gpu.gpus)}) with {what}"
            raise self._refuse(load, "gpu", why, gpu.bytes, [], True)

    def _short(self, load: _Load, room: Room) -> InsufficientMemory:
        """Not even unloading every idle model makes room: say which side lacks it, and who holds it."""
        busy = f"; busy: {', '.join(room.busy)}" if room.busy else ""
        busy += f"; loading: {', '.join(sorted(self.reserved))}" if self.reserved else ""
        gpu = load.gpu
        on_gpu = room.short == "gpu" and gpu is not None
        available = (room.gpu_available_bytes or 0) if on_gpu else room.available_bytes
        total = gpu.bytes if on_gpu and gpu is not None else load.budget.bytes
        return self._refuse(
            load,
            "gpu" if on_gpu else "host",
            f"only {available / MB:.0f} MB of the {total / MB:.0f} MB {'GPU ' if on_gpu else ''}budget would be free after unloading every idle model{busy}",
            available,
            room.busy,
            False,
        )

    def _refuse(self, load: _Load, side: Side, why: str, available: int, busy: list[str], never: bool) -> InsufficientMemory:
        spec, need, gpu, budget = load.spec, load.need, load.gpu, load.budget
        on_gpu = side == "gpu" and gpu is not None
        needed = need.gpu_bytes if on_gpu else load.host_need
        return InsufficientMemory(
            f"{spec.name} needs about {needed / MB:.0f} MB of {'GPU' if on_gpu else 'host'} memory and {why}",
            model=spec.name,
            side=side,
            needed_bytes=needed,
            available_bytes=available,
            budget_bytes=gpu.bytes if on_gpu and gpu is not None else budget.bytes,
            budget_source="gpu" if on_gpu else budget.source,
            busy=busy,
            loading=sorted(self.reserved) if not never else [],
            never_fits=never,
            estimate=msgspec.to_builtins(need),
        )


class _Load(msgspec.Struct, frozen=True):
    """A load ``MemoryLedger.reserve`` makes room for, and the budget it is reckoned against."""

    spec: ModelSpec
    need: MemoryEstimate
    budget: Budget
    gpu: GpuBudget | None  # None: no GPU budget, or nothing of the model on the GPU

    @property
    def host_need(self) -> int:
        return self.need.total_bytes - self.need.gpu_bytes
