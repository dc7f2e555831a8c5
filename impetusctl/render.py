"""How results look on a terminal (tables) and for scripts (JSON)."""

from __future__ import annotations

import json
from typing import Any

import click
import msgspec

from impetusd.protocol.api import DaemonInfo, GenerationResult, Health, LoadedList, LoadedModel, ModelList

_encoder = msgspec.json.Encoder()


def gpu_memory(model: LoadedModel) -> str:
    """What the model counts on the GPU side of the budget (its estimate's GPU part, or what the
    backend reported its processes hold there when larger), or "-" when nothing is offloaded."""
    value = model.gpu_memory_bytes
    if value is None:
        held = model.engine.get("gpu_memory_bytes")
        value = held if isinstance(held, int) and held > 0 else None
    return "-" if value is None else size(value)


def json_out(obj: Any) -> None:
    click.echo(msgspec.json.format(_encoder.encode(obj), indent=2).decode())


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def status(info: DaemonInfo, health: Health) -> None:
    click.echo(f"impetusd {info.version} running (pid {info.pid}), up {info.uptime_s:.0f} s")
    click.echo(f"socket:    {info.socket}")
    click.echo(f"home:      {info.home}")
    click.echo(f"backends:  {', '.join(info.backends) or 'none'}")
    click.echo(f"formats:   {', '.join(info.formats) or 'none'}")
    click.echo(f"loaded:    {health.loaded_models} model(s), {health.in_flight} request(s) in flight")
    for f in health.failures:
        click.echo(f"{f.state + ':':10} {f.name} ({f.reason})")
    for n in health.nodes:
        latency = f", {n.latency_ms:.1f} ms" if n.latency_ms is not None else ""
        used = f", used by {', '.join(n.used_by)}" if n.used_by else ""
        click.echo(f"{'node:':10} {n.name} {n.address} {n.state} ({size(n.free_bytes)} free{latency}{used})")


def models(result: ModelList) -> None:
    rows = [[m.name, m.format or "-", size(m.size_bytes), "loaded" if m.loaded else ("yes" if m.available else "no"), m.source] for m in result.models]
    table(["NAME", "FORMAT", "SIZE", "LOCAL", "SOURCE"], rows)


def loaded(result: LoadedList) -> None:
    rows = []
    for m in result.models:
        if m.keep_alive_s is None:
            until = "forever"
        elif m.expires_in_s is None:
            until = "busy"
        else:
            until = f"{m.expires_in_s:.0f} s"
        estimate = size(m.estimate.total_bytes) if m.estimate else "-"
        load = f"{m.load_ms / 1000:.1f} s" + (f" ({m.warmup_ms / 1000:.2f} warm-up)" if m.warmup_ms is not None else "")
        rate = "-" if m.decode_tps is None else f"{m.decode_tps:.1f}"
        rows.append(
            [
                m.name,
                m.backend,
                str(m.pid),
                size(m.rss_bytes),
                gpu_memory(m),
                estimate,
                str(m.in_flight),
                str(m.requests),
                f"{m.prompt_tokens}/{m.completion_tokens}",
                rate,
                load,
                until,
            ]
        )
    table(["NAME", "BACKEND", "PID", "MEMORY", "GPU MEMORY", "ESTIMATE", "ACTIVE", "REQUESTS", "TOKENS IN/OUT", "TOK/S", "LOADED IN", "UNLOADS IN"], rows)
    if result.memory is not None:
        mem = result.memory
        click.echo(f"memory: {size(mem.used_bytes)} of the {size(mem.budget_bytes)} budget ({mem.source}), {size(mem.available_bytes)} free")
        if mem.gpu_budget_bytes is not None:
            gpus = ", ".join(mem.gpus)
            click.echo(f"gpu memory: {size(mem.gpu_used_bytes)} of {size(mem.gpu_budget_bytes)} ({gpus}), {size(mem.gpu_available_bytes)} free")
    for f in result.failed:
        click.echo(f"FAILED {f.name}: {f.reason}; refused for {f.retry_after_s:.0f} s (impetusctl load forces a restart)")


def run_json(result: GenerationResult) -> dict[str, Any]:
    m = result.message
    out: dict[str, Any] = {
        "model": result.model,
        "backend": result.backend,
        "text": m.content if m is not None else result.text,
        "finish_reason": result.finish_reason,
        "usage": result.usage,
        "timings": result.timings,
    }
    if m is not None and m.tool_calls:
        out["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": _arguments(c.arguments)} for c in m.tool_calls]
    if m is not None and m.reasoning:
        out["reasoning"] = m.reasoning
    if result.logprobs is not None:
        out["logprobs"] = result.logprobs
    if result.warning:
        out["warning"] = result.warning
    return out


def _arguments(text: str) -> Any:
    """A call's arguments as JSON (as the text it was, if it does not parse)."""
    try:
        return json.loads(text)
    except ValueError:
        return text
