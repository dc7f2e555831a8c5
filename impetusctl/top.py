"""``impetusctl top``: what the daemon and the machine are doing, refreshed in place."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from rich.console import Group
from rich.table import Table
from rich.text import Text

from impetusd.protocol.api import HardwareSnapshot, Health, Metrics, NodeInfo

from . import render


class Frame(msgspec.Struct, frozen=True):
    metrics: Metrics
    hardware: HardwareSnapshot
    nodes: list[NodeInfo] = []  # daemon.health's view (as last probed)


def fetch(client: Any) -> Frame:
    return Frame(
        metrics=client.call("daemon.metrics", type=Metrics),
        hardware=client.call("hardware.snapshot", type=HardwareSnapshot),
        nodes=client.call("daemon.health", type=Health).nodes,
    )


def _machine_line(frame: Frame) -> Text:
    ps = frame.hardware.monitors.get("psutil", {})
    cpu = ps.get("cpu_percent")
    total, available = ps.get("memory_total_bytes"), ps.get("memory_available_bytes")
    used = total - available if isinstance(total, int) and isinstance(available, int) else None
    thermal = next((m.get("thermal_state") for m in frame.hardware.monitors.values() if isinstance(m, dict) and m.get("thermal_state")), "unknown")
    th = frame.hardware.thermal  # the daemon's own view (worst level of every monitor)
    if th is not None:
        thermal = th.level + (f" (backing off: batch {th.max_batch}, prefill chunk {th.prefill_chunk})" if th.throttled else "")
    parts = [
        f"CPU {cpu:.0f}%" if isinstance(cpu, (int, float)) else "CPU ?",
        f"memory {render.size(used)} / {render.size(total)}" if used and total else "memory ?",
        f"thermal {thermal}",
    ]
    m = frame.metrics
    return Text(f"impetusd up {m.uptime_s:.0f} s · {m.connections} connection(s) · {m.in_flight} request(s) running · " + " · ".join(parts))


def _hardware_line(frame: Frame) -> Text | None:
    """What the machine is, as the platform monitors measured it."""
    mons = frame.hardware.monitors
    apple, linux = mons.get("apple") or {}, mons.get("linux") or {}
    parts: list[str] = []
    if apple.get("available"):
        parts.append(apple.get("chip") or "Apple chip ?")
        if apple.get("performance_cores") is not None:
            parts.append(f"{apple['performance_cores']}P+{apple.get('efficiency_cores') or 0}E cores")
        if apple.get("gpu_cores"):
            parts.append(f"{apple['gpu_cores']}-core GPU")
    elif linux.get("available"):
        parts.append(linux.get("cpu_model") or linux.get("board") or "CPU ?")
        cg = linux.get("cgroup") or {}
        if cg.get("limited"):
            parts.append(f"cgroup limit {render.size(cg['memory_limit_bytes'])}")
        for gpu in linux.get("nvidia_gpus") or []:
            parts.append(f"{gpu['name']} {render.size(gpu['memory_used_bytes'])}/{render.size(gpu['memory_total_bytes'])}")
    return Text(" · ".join(parts)) if parts else None


def _decode_rate(frame: Frame, name: str) -> str:
    for s in frame.metrics.models:
        h = s.decode_tokens_per_second
        if s.model == name and h.count:
            return f"{h.sum / h.count:.1f}"
    return "-"


def build(frame: Frame) -> Group:
    now = time.time()
    models = Table(title="loaded models", title_justify="left", expand=False)
    on_gpu = any(render.gpu_memory(lm) != "-" for lm in frame.metrics.loaded)  # the column only where a model offloads
    for col in ("MODEL", "BACKEND", "PID", "MEMORY", *(["GPU MEMORY"] if on_gpu else []), "ACTIVE", "REQUESTS", "TOK/S", "UNLOADS IN"):
        models.add_column(col)
    for lm in frame.metrics.loaded:
        until = "never" if lm.keep_alive_s is None else ("busy" if lm.expires_at is None else f"{max(lm.expires_at - now, 0):.0f} s")
        gpu = [render.gpu_memory(lm)] if on_gpu else []
        rate = _decode_rate(frame, lm.name)
        models.add_row(lm.name, lm.backend, str(lm.pid), render.size(lm.rss_bytes), *gpu, str(lm.in_flight), str(lm.requests), rate, until)
    recent = Table(title="recent requests", title_justify="left", expand=False)
    for col in ("AGO", "MODEL", "METHOD", "OUTCOME", "TOKENS", "TTFT", "TOK/S"):
        recent.add_column(col)
    for r in frame.metrics.recent[:8]:
        recent.add_row(
            f"{max(now - r.time, 0):.0f} s",
            r.model,
            r.method,
            r.outcome,
            f"{r.prompt_tokens}+{r.completion_tokens}",
            "-" if r.ttft_ms is None else f"{r.ttft_ms:.0f} ms",
            "-" if r.decode_tps is None else f"{r.decode_tps:.1f}",
        )
    hardware = _hardware_line(frame)
    parts: list[Any] = [_machine_line(frame), *([hardware] if hardware else []), models]
    if frame.nodes:
        nodes = Table(title="compute nodes", title_justify="left", expand=False)
        for col in ("NODE", "ADDRESS", "STATE", "FREE", "LATENCY", "USED BY"):
            nodes.add_column(col)
        for n in frame.nodes:
            latency = "-" if n.latency_ms is None else f"{n.latency_ms:.1f} ms"
            nodes.add_row(n.name, n.address, n.state, render.size(n.free_bytes), latency, ", ".join(n.used_by) or "-")
        parts.append(nodes)
    return Group(*parts, recent)
