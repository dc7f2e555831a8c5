"""Meta-tests that keep the plugin system honest (after datasette's): every hook is
documented in docs/plugins.md and has a test of its own, every RPC method the daemon
serves is in docs/protocol.md, and plugins reach impetusd only through plugin_api."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Callable, Iterator

import pytest

import impetusd.plugin_api as plugin_api
from impetusd.plugin import hookspecs
from impetusd.plugin.manager import build_registries, make_plugin_manager

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
PLUGIN_FILES = sorted([*ROOT.glob("plugins/*/impetus_*/**/*.py"), *(ROOT / "tests" / "plugins").glob("*.py")])
HOOK_HEADING = re.compile(r"^### `(impetus_\w+)\(([^)]*)\)`$", re.MULTILINE)


def hooks() -> dict[str, Callable[..., object]]:
    return {name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "impetus_spec")}


def hook_sections() -> dict[str, tuple[list[str], str]]:
    """Hook name -> (parameters in its heading, its section's text) from docs/plugins.md."""
    text = (DOCS / "plugins.md").read_text()
    found = list(HOOK_HEADING.finditer(text))
    sections = {}
    for match, following in zip(found, [*found[1:], None]):
        end = following.start() if following else len(text)
        body = text[match.end() : end].split("\n## ")[0]
        sections[match.group(1)] = ([p.strip() for p in match.group(2).split(",") if p.strip()], body)
    return sections


def test_there_are_hooks() -> None:
    assert len(hooks()) >= 10 and all(name.startswith("impetus_") for name in hooks())


@pytest.mark.parametrize("name", sorted(hooks()))
def test_hook_is_documented(name: str) -> None:
    sections = hook_sections()
    assert name in sections, f"docs/plugins.md has no '### `{name}(...)`' section"
    params, body = sections[name]
    fn = hooks()[name]
    assert params == list(inspect.signature(fn).parameters), f"{name}: the heading's parameters differ from the hookspec's"
    for param in params:
        assert f"`{param}`" in body, f"{name}: parameter {param!r} is not described"
    firstresult = "yes" if fn.impetus_spec["firstresult"] else "no"  # type: ignore[attr-defined]
    assert f"- **firstresult**: {firstresult}" in body, f"{name}: say '- **firstresult**: {firstresult}'"
    assert "- **called**:" in body, f"{name}: say when it is called"


def test_documented_hooks_exist() -> None:
    assert sorted(hook_sections()) == sorted(hooks())


def hook_tests() -> dict[str, ast.FunctionDef]:
    """``test_hook_<hook name>`` functions anywhere under tests/."""
    found = {}
    for path in (ROOT / "tests").glob("test_*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_hook_impetus_"):
                found[node.name.removeprefix("test_hook_")] = node
    return found


@pytest.mark.parametrize("name", sorted(hooks()))
def test_hook_has_a_test_of_its_own(name: str) -> None:
    test = hook_tests().get(name)
    assert test is not None, f"no test_hook_{name} under tests/"
    assert not any("skip" in ast.unparse(d) or "xfail" in ast.unparse(d) for d in test.decorator_list), f"test_hook_{name} is skipped"
    assert any(isinstance(n, ast.Assert) for n in ast.walk(test)), f"test_hook_{name} asserts nothing"


def test_hook_tests_name_real_hooks() -> None:
    assert set(hook_tests()) <= set(hooks())


def test_every_rpc_method_is_documented() -> None:
    """The methods of a daemon with the bundled plugins and the tests' impetus_echo each
    have a row in docs/protocol.md."""
    methods = build_registries(make_plugin_manager(["impetus_echo"])).methods.names()
    text = (DOCS / "protocol.md").read_text()
    assert {"daemon.info", "chat", "models.pull", "echo.ping"} <= set(methods)
    missing = [m for m in methods if not re.search(rf"^\| `{re.escape(m)}` ", text, re.MULTILINE)]
    assert not missing, f"docs/protocol.md has no table row for {missing}"


def impetusd_imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, module, names) of every import of impetusd in ``path``, at any depth."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "impetusd":
                    yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "impetusd":
            yield node.lineno, node.module or "", [a.name for a in node.names]


def test_plugins_import_impetusd_only_through_plugin_api() -> None:
    assert len(PLUGIN_FILES) > 30
    wrong = [f"{p.relative_to(ROOT)}:{line} {module}" for p in PLUGIN_FILES for line, module, names in impetusd_imports(p) if module != "impetusd.plugin_api" or not names]
    assert not wrong, "plugins must import from impetusd.plugin_api only:\n" + "\n".join(wrong)
    unknown = {n for p in PLUGIN_FILES for _, _, names in impetusd_imports(p) for n in names} - set(plugin_api.__all__)
    assert not unknown, f"imported from plugin_api but not in its __all__: {sorted(unknown)}"


def test_plugin_api_is_documented_and_light() -> None:
    """Every export resolves and is named in docs/plugins.md; importing the module
    loads no ML library and none of the daemon's machinery."""
    assert len(set(plugin_api.__all__)) == len(plugin_api.__all__)
    doc = (DOCS / "plugins.md").read_text()
    for name in plugin_api.__all__:
        assert hasattr(plugin_api, name)
        assert f"`{name}`" in doc or f"`{name}()`" in doc, f"docs/plugins.md does not name {name}"
    heavy = ("mlx", "llama_cpp", "numpy", "torch", "transformers", "impetusd.daemon", "impetusd.dispatch", "impetusd.residency", "impetusd.transport", "impetusd.workers")
    code = f"import sys, impetusd.plugin_api; print(sorted(m for m in sys.modules if m.startswith({heavy!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_plugin_example_in_the_docs_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """docs/plugins.md's example, registered through the real plugin manager."""
    [source] = re.findall(r"```python\n(.*?)```", (DOCS / "plugins.md").read_text(), re.DOTALL)
    module = types.ModuleType("impetus_shout")
    monkeypatch.setitem(sys.modules, "impetus_shout", module)
    exec(compile(source, "docs/plugins.md", "exec"), module.__dict__)
    pm = make_plugin_manager(["impetus_shout"])
    regs = build_registries(pm)
    model = tmp_path / "loud.shout"
    model.write_text("x")
    fmt, backend = regs.formats.get("shout"), regs.backends.get("shout")
    assert fmt is not None and fmt.detect(model) and fmt.inspect(model) == {"size": 1}
    assert backend is not None
    engine = backend.start(plugin_api.ModelSpec(name="loud", path=str(model), format="shout"))
    pieces: list[str] = []
    request = plugin_api.GenerateRequest(kind="complete", prompt="quiet please")
    result = engine.generate(request, pieces.append, lambda: False)
    assert result.text == "QUIET PLEASE" and pieces == ["QUIET PLEASE"]
    assert not isinstance(engine, (plugin_api.BatchEngine, plugin_api.TunableEngine, plugin_api.WarmUpEngine, plugin_api.CacheTierEngine))
    pm.hook.impetus_event(event=plugin_api.Event(kind="request.finished", model="loud", data={"completion_tokens": 1}))


CLIENT_FILES = sorted((ROOT / "impetusctl").rglob("*.py"))
CLIENT_FACES = ("impetusd.protocol", "impetusd.local")  # the wire, and the face for local diagnostics


def test_the_client_imports_impetusd_only_through_the_protocol_and_the_local_face() -> None:
    """The wall: impetusctl (the shim included) reaches the daemon's package through
    ``impetusd.protocol`` (the wire) and ``impetusd.local`` (docs/design.md, The wall), nothing else."""
    assert len(CLIENT_FILES) > 20

    def through_the_wall(module: str) -> bool:
        return any(module == face or module.startswith(face + ".") for face in CLIENT_FACES)

    wrong = [f"{p.relative_to(ROOT)}:{line} {module}" for p in CLIENT_FILES for line, module, _ in impetusd_imports(p) if not through_the_wall(module)]
    assert not wrong, "impetusctl must import impetusd.protocol or impetusd.local only:\n" + "\n".join(wrong)


def test_the_local_face_is_documented() -> None:
    import impetusd.local as local

    doc = (DOCS / "design.md").read_text().split("## The wall")[1].split("\n## ")[0]
    for name in local.__all__:
        assert hasattr(local, name)
        assert f"`{name}`" in doc or f"`{name}()`" in doc, f"docs/design.md (The wall) does not name impetusd.local's {name}"


ENGINE_WORDS = re.compile(r"(?<![oO])llama|rpc-server", re.IGNORECASE)  # not "ollama", the Ollama API
# The keys of earlier config files that config.py reads into [backends.llamacpp].
LEGACY_ENGINE_WORDS = {"impetusd/config.py": {"llama_server", "llamacpp_gpu_layers", "llamacpp", "llamacpp_gpu_layers must be a number of layers, 'all' or 'auto'"}}


def code_words(path: Path) -> Iterator[tuple[int, str]]:
    """Every name and string of ``path``'s code, docstrings and comments left out."""
    tree = ast.parse(path.read_text(), str(path))
    docs = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body and isinstance(body[0], ast.Expr):
            docs.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words = [node.id]
        elif isinstance(node, ast.Attribute):
            words = [node.attr]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            words = [node.name]
        elif isinstance(node, ast.arg):
            words = [node.arg]
        elif isinstance(node, ast.alias):
            words = [node.name, node.asname or ""]
        elif isinstance(node, ast.keyword):
            words = [node.arg or ""]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            words = [node.value]
        else:
            continue
        yield from ((getattr(node, "lineno", 0), w) for w in words if w)


def test_the_engines_own_their_machinery() -> None:
    """Nothing of the daemon or the CLI names llama.cpp in its code (docstrings and comments
    may): the llama.cpp plugin brings its own machinery through BackendSpec and the hooks."""
    found = [
        f"{p.relative_to(ROOT)}:{line} {word[:80]!r}"
        for p in sorted([*(ROOT / "impetusd").rglob("*.py"), *(ROOT / "impetusctl").rglob("*.py")])
        for line, word in code_words(p)
        if ENGINE_WORDS.search(word) and word not in LEGACY_ENGINE_WORDS.get(str(p.relative_to(ROOT)), set())
    ]
    assert not found, "llama.cpp in the core's code:\n" + "\n".join(found)
