"""A load, planned before anything starts: which backend, with which options, how much memory,
where (compute nodes, this machine's GPU) and in what worker environment.

Nothing here reserves memory or starts a process (``launch.py`` does): planning only asks
the machine what it must (the nodes' free memory, the GPU's room) through what it is
handed. The backend's own parts come from its ``BackendSpec``: its workers' environment
(``worker_env``, from its ``[backends.<name>]`` table), its KV arithmetic
(``kv_element_bytes``), its GPU offload (``gpu_layers``) and its compute nodes (``nodes``:
the ``NodePlacement`` the manager made for it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from impetusd.engine.backend import BackendSpec
from impetusd.engine.messages import LoadOptions, ModelSpec
from impetusd.engine.placement import NodePlacement, Placement
from impetusd.plugin.registries import PluginRegistry
from impetusd.protocol.api import MemoryEstimate
from impetusd.protocol.errors import InvalidParams, NoBackend, UnsupportedParameter
from impetusd.residency.budget import estimate, split
from impetusd.residency.options import check_options, for_backend
from impetusd.workers.blas import worker_env

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from impetusd.config import Config


GpuRoom = Callable[[], int | None]  # GPU bytes a new load may take; None: no GPU in the budget


class LoadRequest(msgspec.Struct, frozen=True):
    """What a load asks for beyond the model (``models.load``'s params; a request's load asks
    for nothing)."""

    backend: str | None = None
    options: LoadOptions | None = None  # explicit per-load options (None: as last asked, or the defaults)
    gpu_layers: int | None = None
    nodes: list[str] | None = None  # None: as last asked, or the configuration's


class LoadPlan(msgspec.Struct, frozen=True):
    """A load, decided: the model (with the options its backend honours), the backend, the
    memory it will need here (``need``; with a placement, ``placement.local`` is what this
    machine's budget is charged), where it goes, and the worker's environment."""

    spec: ModelSpec
    backend: BackendSpec
    need: MemoryEstimate
    env: dict[str, str]
    nodes: list[str]  # the nodes the load asked for (a reload without a lost node asks again)
    placement: Placement | None = None  # split across compute nodes (None: this machine only)
    placer: NodePlacement | None = None  # the backend's compute nodes, which made ``placement``

    @property
    def charged(self) -> MemoryEstimate:
        """What this machine's budget is charged."""
        return self.placement.local if self.placement else self.need


def choose(spec: ModelSpec, request: LoadRequest, chosen: BackendSpec, inspect: Callable[[Path], dict[str, Any]]) -> ModelSpec:
    """``spec`` with the options ``chosen`` honours, once what it cannot do is refused."""
    check_options(spec, chosen, request.options is not None, inspect)
    spec = msgspec.structs.replace(spec, options=for_backend(spec.options, chosen))
    if request.gpu_layers is not None and chosen.gpu_layers is None:
        raise UnsupportedParameter(f"backend {chosen.name!r} cannot offload layers to a GPU (n_gpu_layers)", param="n_gpu_layers", backend=chosen.name)
    return spec


async def plan_load(
    config: Config,
    spec: ModelSpec,
    chosen: BackendSpec,
    request: LoadRequest,
    asked_nodes: list[str] | None,
    *,
    placer: NodePlacement | None,
    gpu_room: GpuRoom,
) -> LoadPlan:
    """The plan for loading ``spec`` (from ``choose``) on ``chosen``: the estimate, then the
    split across ``asked_nodes`` (the model's last ``models.load``'s, else the configuration's)
    by ``placer`` (the backend's compute nodes), or this machine's GPU."""
    env = _worker_env(config, chosen)
    need = _estimate(config, spec, chosen, env)
    nodes = _nodes(chosen, asked_nodes, config.nodes)
    need, placement, placed = await _placement(spec, chosen, need, env, nodes, request.gpu_layers, placer, gpu_room)
    return LoadPlan(spec=spec, backend=chosen, need=need, env=env | placed, nodes=nodes, placement=placement, placer=placer)


def _worker_env(config: Config, chosen: BackendSpec) -> dict[str, str]:
    """The worker's environment: its log level, the BLAS it preloads, and the backend's own
    (``worker_env`` of its ``[backends.<name>]`` table: binaries, settings)."""
    blas = worker_env(config.worker_blas)
    own = chosen.worker_env(config.backends.get(chosen.name, {})) if chosen.worker_env is not None else {}
    return {"IMPETUS_LOG_LEVEL": config.log_level, **blas, **own}


def check_backend_tables(config: Config, backends: PluginRegistry[BackendSpec]) -> None:
    """Each ``[backends.<name>]`` table of config.toml as its backend reads it, at start, so a
    bad key fails the start with its name instead of the first load; a table for a backend that
    is not installed is logged and kept."""
    for name, table in config.backends.items():
        backend = backends.get(name)
        if backend is None or backend.worker_env is None:
            log.warning("config.toml: [backends.%s] is for a backend that is not installed or takes no settings; ignored", name)
            continue
        try:
            backend.worker_env(table)
        except InvalidParams as exc:
            raise InvalidParams(f"config.toml: {exc.message}", **exc.fields) from None


def _estimate(config: Config, spec: ModelSpec, chosen: BackendSpec, env: dict[str, str]) -> MemoryEstimate:
    """What the model should need on ``chosen``, before any of it is placed."""
    weights = chosen.memory_weights(spec, env) if chosen.memory_weights is not None else None
    context = chosen.context_tokens or config.memory_estimate_context  # a backend that fixes its context says so
    ranks = spec.options.ranks if spec.options else 1  # each rank a process: its own overhead, a share of the rest
    return estimate(spec, chosen.memory_overhead_bytes * ranks, context, weights, sequences=chosen.kv_sequences, element_bytes=chosen.kv_element_bytes)


def _nodes(chosen: BackendSpec, asked: list[str] | None, configured: Sequence[str]) -> list[str]:
    """The nodes to split across: those asked for, else the configuration's default nodes
    for the backends that can use them."""
    if asked is not None:
        return list(asked)
    return list(configured) if "nodes" in chosen.capabilities else []


async def _placement(
    spec: ModelSpec,
    chosen: BackendSpec,
    need: MemoryEstimate,
    env: dict[str, str],
    nodes: list[str],
    gpu_layers: int | None,
    placer: NodePlacement | None,
    gpu_room: GpuRoom,
) -> tuple[MemoryEstimate, Placement | None, dict[str, str]]:
    """Where the model goes: across ``nodes`` and this machine, or (without nodes) on this
    machine, its GPU taking what fits (a split across nodes stays on the CPUs). The estimate
    with its GPU part, the placement across nodes, and what the worker is told of it (the
    placement's ``env``; without one, the backend's ``worker_env`` says there are no nodes)."""
    if not nodes:
        need, layers = await _on_gpu(spec, chosen, env, gpu_layers, need, gpu_room)
        return need, None, layers
    placement = await _on_nodes(spec, chosen, need, nodes, placer)
    return need, placement, dict(placement.env)


async def _on_nodes(spec: ModelSpec, chosen: BackendSpec, need: MemoryEstimate, nodes: list[str], placer: NodePlacement | None) -> Placement:
    """Split ``need`` across the requested nodes and this machine (``placer``: the compute
    nodes of a backend declaring the ``nodes`` capability)."""
    backend = chosen.name
    if "nodes" not in chosen.capabilities or placer is None:
        ranks = "; it can split a model across processes on this machine instead (ranks)" if chosen.check_ranks is not None else ""
        raise NoBackend(
            f"{spec.name}: splitting a model across nodes needs a backend that can (the nodes capability); {backend} runs on this machine only{ranks}",
            backend=backend,
            reason="no-nodes",
        )
    return await placer.place(spec, need, nodes)


async def _on_gpu(
    spec: ModelSpec, chosen: BackendSpec, env: dict[str, str], wanted: int | None, need: MemoryEstimate, gpu_room: GpuRoom
) -> tuple[MemoryEstimate, dict[str, str]]:
    """Split ``need`` into host and GPU parts by the layers ``chosen`` will offload, and tell
    the worker that count (``IMPETUS_GPU_LAYERS``). Without a GPU in the budget the backend
    decides in the worker (a count asked for is passed on as it is)."""
    plan = chosen.gpu_layers
    if plan is None:
        return need, {}
    room = gpu_room()
    if room is None:
        return need, ({} if wanted is None else {"IMPETUS_GPU_LAYERS": str(wanted)})
    offloaded, layers = await anyio.to_thread.run_sync(lambda: plan(spec, env, wanted, room))
    return split(need, layers, offloaded), {"IMPETUS_GPU_LAYERS": str(offloaded)}
