"""The daemon's import graph: no cycles, and every subpackage imports only the
layers below it (docs/design.md, Layers). The rest of the repository (impetusctl/
and the plugins' packages) has no cycle either.

The graph is read with ``ast``, not by importing: module-level imports, imports
inside functions and ``if TYPE_CHECKING:`` imports all count, because a cycle
under TYPE_CHECKING is still a cycle a reader has to follow.

Layers, bottom first (a layer may import those listed for it, and itself):

- ``impetusd`` (the package's ``__init__``: the version) imports nothing.
- ``protocol``: the wire. Errors, API Structs, framing, messages.
- ``config``: the configuration; imports ``protocol.errors`` only.
- ``observe``: events, metrics, the cgroup. Imported by the plugin layer (the
  ``impetus_event`` hook carries an Event), so it sits below it.
- ``engine``: the engine contract: what a backend implements, is handed and returns.
- ``toolkit``: helpers the daemon and plugins share (chat inputs, stops, grammars,
  machine and NVIDIA facts, child processes, signed files).
- ``plugin``: the plugin host: hook specs, the plugin manager, registries.
- ``plugin_api``: the one import surface for plugin authors.
- ``workers``, ``store``: a worker process and its handle; the registry of models
  and pulls. Neither knows the other.
- ``plugin.builtins``: the daemon's own plugins, which are plugins like any other:
  they may use the store's catalog; nothing imports them by name.
- ``residency``: which models are in memory; starts and stops workers.
- ``dispatch``: RPC methods and the dispatcher; the request path goes
  dispatch -> residency -> workers, never back.
- ``transport``: the socket server; it may use ``dispatch.dispatcher`` (the
  request context and the dispatcher), not the handlers behind it.
- ``daemon``, ``main``, ``__main__``: the composition root and the entry points.
- ``local``: the face ``impetusctl`` uses for local diagnostics (docs/design.md, The wall):
  it may use the layers up to ``residency``; nothing of the daemon imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "impetusd"
# Every other package of the repository, each checked for cycles with the daemon's.
OTHER_PACKAGES = [ROOT / "impetusctl", *sorted(ROOT.glob("plugins/*/impetus_*"))]

BASE = {"impetusd"}
WIRE = BASE | {"protocol"}
CONFIG = WIRE | {"config"}
OBSERVE = CONFIG | {"observe"}
ENGINE = OBSERVE | {"engine"}
TOOLKIT = ENGINE | {"toolkit"}
PLUGIN = TOOLKIT | {"plugin"}
SERVICES = PLUGIN | {"workers", "store"}
RESIDENCY = SERVICES | {"residency"}
DISPATCH = RESIDENCY | {"dispatch"}

# layer -> the layers its modules may import
ALLOWED: dict[str, set[str]] = {
    "impetusd": set(),
    "protocol": WIRE,
    "config": CONFIG,
    "observe": OBSERVE,
    "engine": ENGINE,
    "toolkit": TOOLKIT,
    "plugin": PLUGIN,
    "plugin_api": PLUGIN | {"plugin_api"},
    "workers": PLUGIN | {"workers"},
    "store": PLUGIN | {"store"},
    "plugin.builtins": PLUGIN | {"store", "plugin.builtins"},
    "residency": RESIDENCY,
    "dispatch": DISPATCH,
    "transport": PLUGIN | {"dispatch.context", "dispatch.dispatcher", "transport"},
    "daemon": {"*"},
    "main": {"*"},
    "__main__": {"*"},
    "local": RESIDENCY | {"local"},
}



def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, package): p for p in sorted(package.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every impetusd module ``name`` imports, wherever the import statement is."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import mod`` imports the module; ``from mod import name`` the module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # ``import impetusd.x.y`` names a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph(packages: list[Path] | None = None) -> dict[str, set[str]]:
    """The import graph of ``packages`` (the daemon's alone by default)."""
    mods = {name: path for package in packages or [PACKAGE] for name, path in modules(package).items()}
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def layer_of(module: str) -> str:
    rest = module.removeprefix("impetusd").lstrip(".")
    if not rest:
        return "impetusd"
    parts = rest.split(".")
    if parts[:2] == ["plugin", "builtins"]:
        return "plugin.builtins"
    if parts[:2] == ["dispatch", "dispatcher"] and len(parts) == 2:
        return "dispatch"
    return parts[0]


def allowed(importer: str, imported: str) -> bool:
    rules = ALLOWED[layer_of(importer)]
    if "*" in rules:
        return True
    target = layer_of(imported)
    if imported.removeprefix("impetusd.") in rules:  # a single module another layer may use
        return True
    if layer_of(importer) == "plugin.builtins" and target == "plugin":
        return True
    return target in rules


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that starts and ends at the same module, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_every_module_has_a_layer() -> None:
    unknown = sorted(m for m in modules() if layer_of(m) not in ALLOWED)
    assert not unknown, f"modules outside every layer (add their layer to ALLOWED): {unknown}"


def test_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_anywhere() -> None:
    """The CLI and the HTTP shim (impetusctl/) and every plugin's package, with the
    daemon they import: no cycle among them either, function-local imports included."""
    cycle = find_cycle(graph([PACKAGE, *OTHER_PACKAGES]))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_layers_import_only_downwards() -> None:
    bad = sorted(
        f"{m} imports {t} ({layer_of(m)} may import {', '.join(sorted(ALLOWED[layer_of(m)]))})"
        for m, targets in graph().items()
        for t in targets
        if not allowed(m, t)
    )
    assert not bad, "layering broken:\n" + "\n".join(bad)


def test_config_imports_only_the_errors() -> None:
    assert graph()["impetusd.config"] <= {"impetusd.protocol.errors"}


def test_the_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Function-level and TYPE_CHECKING imports count; a cycle is found."""
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from impetusd.daemon import Daemon\n"
        "def f():\n    import impetusd.store.registry\n    from impetusd.store import pull\n"
    )
    known = {"impetusd.daemon", "impetusd.store", "impetusd.store.registry", "impetusd.store.pull"}
    assert imports_of("impetusd.residency.m", source, known) == {"impetusd.daemon", "impetusd.store.registry", "impetusd.store.pull"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert not allowed("impetusd.store.pull", "impetusd.dispatch.dispatcher")
    assert allowed("impetusd.transport.server", "impetusd.dispatch.dispatcher")
    assert not allowed("impetusd.transport.server", "impetusd.dispatch.methods")
