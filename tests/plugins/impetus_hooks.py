"""A test plugin for the hooks impetus_echo leaves alone, loaded through
IMPETUS_PLUGINS beside it (tests/test_hooks.py).

- ``impetus_startup`` / ``impetus_shutdown`` return awaitables (the daemon must
  await them) and ``impetus_event`` observes every event: each appends a JSON
  line to the file named by ``IMPETUS_TEST_HOOKS``, so a test reads what the
  real daemon called, in order.
- ``impetus_resolve_model`` turns ``hooked:<path>`` into a model named so, and
  ``impetus_select_backend`` runs those models on ``echo-tiered``: the echo
  engine plus prompt-cache tiers (``CacheTierEngine``).
- ``impetus_register_cache_tiers`` adds a memory tier for ``echo-tiered``, a disk
  tier that declines without a disk budget, and one for ``mlx`` only; the engine
  reports the tiers it was handed (name, backend, variant, budget) in its info.
- ``impetus_register_commands`` adds ``impetusctl hooked``, which prints the home and
  whether ``--json`` was given (what it finds in its ``CliState``), and
  ``impetus_register_doctor_checks`` a ``hooked`` doctor check that warns, naming the home.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Awaitable

import msgspec
from impetus_echo import EchoEngine, EchoSettings

from impetusd.plugin_api import (
    BackendSpec,
    CacheTier,
    CacheTierContext,
    CliCommand,
    CliState,
    Config,
    Diagnosis,
    DoctorCheck,
    EngineInfo,
    Event,
    ModelSpec,
    PluginRegistry,
    PromptCacheTier,
    hookimpl,
)

PREFIX = "hooked:"
BACKEND = "echo-tiered"
VARIANT = "echo-v1"


def record(hook: str, **fields: Any) -> None:
    path = os.environ.get("IMPETUS_TEST_HOOKS")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"hook": hook, "pid": os.getpid(), **fields}) + "\n")


class Tier:
    """A tiny ``PromptCacheTier``: exact token prefixes in a dict."""

    def __init__(self, ctx: CacheTierContext) -> None:
        self.ctx = ctx
        self.entries: dict[tuple[int, ...], Any] = {}

    def match(self, tokens: list[int]) -> int:
        return max((len(k) for k in self.entries if tuple(tokens[: len(k)]) == k), default=0)

    def fetch(self, tokens: list[int]) -> tuple[Any, int] | None:
        n = self.match(tokens)
        return (self.entries[tuple(tokens[:n])], n) if n else None

    def store(self, tokens: list[int], cache: Any) -> None:
        self.entries[tuple(tokens)] = cache

    def stats(self) -> dict[str, int]:
        return {"entries": len(self.entries)}


def memory_tier(ctx: CacheTierContext) -> PromptCacheTier | None:
    return Tier(ctx) if ctx.memory_bytes > 0 else None


def disk_tier(ctx: CacheTierContext) -> PromptCacheTier | None:
    return Tier(ctx) if ctx.directory and ctx.disk_bytes > 0 else None  # declines without a disk budget


class TieredEchoEngine(EchoEngine):
    cache_variant = VARIANT

    def __init__(self, settings: EchoSettings) -> None:
        super().__init__(settings)
        self.tiers: list[tuple[str, PromptCacheTier]] = []

    def use_cache_tiers(self, tiers: list[tuple[str, PromptCacheTier]]) -> None:
        self.tiers = tiers

    def info(self) -> EngineInfo:
        handed = [
            {"name": name, "backend": t.ctx.backend, "variant": t.ctx.variant, "memory_bytes": t.ctx.memory_bytes}
            for name, t in self.tiers
            if isinstance(t, Tier)
        ]
        base = super().info()
        return msgspec.structs.replace(base, backend=BACKEND, details={**base.details, "cache_tiers": handed})


def _start(spec: ModelSpec) -> TieredEchoEngine:
    return TieredEchoEngine(msgspec.convert(spec.metadata, EchoSettings))


@hookimpl
def impetus_register_backends(registry: PluginRegistry[BackendSpec]) -> None:
    caps = frozenset({"chat", "complete", "max_tokens", "temperature", "top_p", "stop"})
    registry.add(BackendSpec(name=BACKEND, formats=frozenset({"echo"}), capabilities=caps, start=_start, memory_overhead_bytes=32 * 1024 * 1024))


@hookimpl
def impetus_register_cache_tiers(registry: PluginRegistry[CacheTier]) -> None:
    registry.add(CacheTier(name="hooked-disk", factory=disk_tier, backends=frozenset({BACKEND}), order=10))
    registry.add(CacheTier(name="hooked-memory", factory=memory_tier, backends=frozenset({BACKEND}), order=0))
    registry.add(CacheTier(name="hooked-mlx", factory=memory_tier, backends=frozenset({"mlx"})))


@hookimpl
def impetus_resolve_model(ref: str, config: Config) -> ModelSpec | None:
    if not ref.startswith(PREFIX):
        return None
    record("resolve_model", ref=ref)
    path = Path(ref[len(PREFIX) :]).expanduser().resolve()
    return ModelSpec(name=ref, path=str(path), format="", source="hooks")


@hookimpl
def impetus_select_backend(spec: ModelSpec, backends: list[BackendSpec]) -> str | None:
    if not spec.name.startswith(PREFIX):
        return None
    record("select_backend", model=spec.name, offered=sorted(b.name for b in backends))
    return BACKEND if any(b.name == BACKEND for b in backends) else None


@hookimpl
def impetus_startup(daemon: Any) -> Awaitable[None]:
    async def started() -> None:  # recorded only when the daemon awaits it
        record("startup")

    return started()


@hookimpl
def impetus_shutdown(daemon: Any) -> Awaitable[None]:
    async def stopping() -> None:
        record("shutdown")

    return stopping()


@hookimpl
def impetus_event(event: Event) -> None:
    record("event", kind=event.kind, model=event.model)


def hooked_command() -> Any:
    import click

    @click.command("hooked")
    @click.argument("word")
    @click.pass_obj
    def hooked(state: CliState, word: str) -> None:
        """Say WORD, the home and --json (a test plugin's command)."""
        click.echo(json.dumps({"word": word, "home": str(state.config.home), "json": state.json}))

    return hooked


@hookimpl
def impetus_register_commands(registry: PluginRegistry[CliCommand]) -> None:
    registry.add(CliCommand("hooked", hooked_command, "a test plugin's command"))


def hooked_check(config: Config) -> Diagnosis:
    return Diagnosis("hooked", "warn", f"a test plugin's check of {config.home}", "nothing to fix")


@hookimpl
def impetus_register_doctor_checks(registry: PluginRegistry[DoctorCheck]) -> None:
    registry.add(DoctorCheck("hooked", hooked_check))
