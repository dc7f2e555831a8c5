"""One test per hook (``test_hook_<hook name>``; tests/test_meta.py checks that each
exists), each through the real plugin manager with real small plugins from
tests/plugins: impetus_echo, impetus_thermal_script and impetus_hooks. Hooks that
only fire in the daemon are watched in a real daemon, whose impetus_hooks plugin
writes what it was called with to a file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import DaemonProcess, daemon_env, short_socket, wait_until
from impetusd.config import Config
from impetusd.plugin.manager import build_registries, make_plugin_manager

PLUGINS = "impetus_echo,impetus_hooks,impetus_thermal_script"
MEMORY_TIER_BYTES = 256 * 1024 * 1024  # the default prompt_cache_memory_bytes


class Hooked:
    """A daemon with the hook plugins, and the records its impetus_hooks wrote."""

    def __init__(self, root: Path) -> None:
        self.log = root / "hooks.jsonl"
        thermal = root / "thermal"
        thermal.write_text("nominal")
        self.daemon = DaemonProcess(
            root, "prompt_cache_disk_bytes = 0\n", IMPETUS_PLUGINS=PLUGINS, IMPETUS_TEST_HOOKS=str(self.log), IMPETUS_TEST_THERMAL=str(thermal)
        )

    def records(self, hook: str | None = None) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [r for r in map(json.loads, lines) if hook is None or r["hook"] == hook]


@pytest.fixture(scope="module")
def hooked(tmp_path_factory: pytest.TempPathFactory):
    h = Hooked(tmp_path_factory.mktemp("hooked"))
    h.daemon.start()
    yield h
    h.daemon.stop()


@pytest.fixture(scope="module")
def echo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "words.echo"
    path.write_text("0")
    return path


def chat(conn: Any, model: str, text: str = "hello there") -> dict[str, Any]:
    return conn.call("chat", {"model": model, "messages": [{"role": "user", "content": text}]})


def loaded(conn: Any, name: str) -> dict[str, Any]:
    [entry] = [m for m in conn.call("models.loaded")["result"]["models"] if m["name"] == name]
    return entry


# --- registration hooks ------------------------------------------------------------


def test_hook_impetus_register_model_formats(hooked: Hooked, echo_file: Path, tmp_path: Path) -> None:
    fmt = build_registries(make_plugin_manager(["impetus_echo"])).formats.get("echo")
    assert fmt is not None and fmt.detect(echo_file) and not fmt.detect(echo_file.with_suffix(".txt"))
    assert fmt.inspect(echo_file) == {"delay_s": 0.0}
    unknown = tmp_path / "notes.txt"
    unknown.write_text("not a model")
    with hooked.daemon.connect() as conn:
        assert chat(conn, str(echo_file))["result"]["message"]["content"] == "hello there"
        err = chat(conn, str(unknown))["error"]
    assert err["data"]["name"] == "UnsupportedFormat" and "echo" in err["message"]


def test_hook_impetus_register_backends(hooked: Hooked, echo_file: Path) -> None:
    regs = build_registries(make_plugin_manager([*PLUGINS.split(",")]))
    assert regs.backends.get("echo-tiered").formats == frozenset({"echo"})  # type: ignore[union-attr]
    with hooked.daemon.connect() as conn:
        assert {"echo", "echo-tiered"} <= set(conn.call("daemon.info")["result"]["backends"])
        assert chat(conn, str(echo_file))["result"]["backend"] == "echo"


def test_hook_impetus_register_cache_tiers(hooked: Hooked, echo_file: Path) -> None:
    """The worker of an echo-tiered model builds the tiers registered for that backend,
    in order, and hands the engine those that accept (the disk tier has no budget here;
    the mlx one is for another backend); the plain echo engine takes none."""
    regs = build_registries(make_plugin_manager(["impetus_hooks"]))
    assert {"hooked-memory", "hooked-disk", "hooked-mlx"} <= set(regs.cache_tiers.names())
    model = f"hooked:{echo_file}"
    with hooked.daemon.connect() as conn:
        assert chat(conn, model)["result"]["backend"] == "echo-tiered"
        tiers = loaded(conn, model)["engine"]["cache_tiers"]
        chat(conn, str(echo_file))
        plain = loaded(conn, str(echo_file.resolve()))["engine"]
    assert tiers == [{"name": "hooked-memory", "backend": "echo-tiered", "variant": "echo-v1", "memory_bytes": MEMORY_TIER_BYTES}]
    assert "cache_tiers" not in plain


def test_hook_impetus_register_hardware_monitors(hooked: Hooked, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    level = tmp_path / "level"
    level.write_text("serious")
    monkeypatch.setenv("IMPETUS_TEST_THERMAL", str(level))
    scripted = build_registries(make_plugin_manager(["impetus_thermal_script"])).monitors.get("scripted")
    assert scripted is not None and scripted.thermal is not None and scripted.thermal() == "serious"
    with hooked.daemon.connect() as conn:
        monitors = conn.call("hardware.snapshot")["result"]["monitors"]
    assert monitors["scripted"] == {"thermal_state": "nominal"}  # the daemon's own file
    assert "psutil" in monitors


def test_hook_impetus_register_methods(hooked: Hooked) -> None:
    methods = build_registries(make_plugin_manager(["impetus_echo"])).methods
    assert "echo.ping" in methods and "daemon.info" in methods
    with hooked.daemon.connect() as conn:
        assert conn.call("echo.ping", {"text": "hi"})["result"] == {"text": "echo: hi", "pid": hooked.daemon.pid}
        described = conn.call("daemon.describe")["result"]["methods"]
        listed = conn.call("daemon.info")["result"]["methods"]
    assert "echo.ping" in described and "echo.ping" in listed


def impetusctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "impetusctl", *args], env=env, capture_output=True, text=True, timeout=180)


def test_hook_impetus_register_commands(tmp_path: Path) -> None:
    """A plugin's command is an impetusctl command: listed in the help, run with its CliState."""
    commands = build_registries(make_plugin_manager(["impetus_hooks"])).commands
    assert "hooked" in commands and "node" in commands  # the llama.cpp plugin's impetusctl node
    env = daemon_env(tmp_path / "home", tmp_path / "s.sock", IMPETUS_PLUGINS="impetus_echo,impetus_hooks")
    done = impetusctl(env, "--json", "hooked", "hi")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"word": "hi", "home": str(tmp_path / "home"), "json": True}
    listed = impetusctl(env, "--help").stdout
    assert "hooked" in listed and "node" in listed
    assert "hooked" not in impetusctl(daemon_env(tmp_path / "home", tmp_path / "s.sock"), "--help").stdout


def test_hook_impetus_register_doctor_checks(tmp_path: Path) -> None:
    """A plugin's check is a line of impetusctl doctor, after the built-in python/accelerator/mlx ones."""
    env = daemon_env(tmp_path / "home", short_socket(), IMPETUS_PLUGINS="impetus_echo,impetus_hooks")
    done = impetusctl(env, "--json", "doctor")
    names = [c["name"] for c in json.loads(done.stdout)["checks"]]
    [check] = [c for c in json.loads(done.stdout)["checks"] if c["name"] == "hooked"]
    assert check == {"name": "hooked", "status": "warn", "detail": f"a test plugin's check of {tmp_path / 'home'}", "fix": "nothing to fix"}
    assert names.index("mlx") < names.index("hooked") < names.index("cpu blas") and "llama-server" in names


# --- decisions ---------------------------------------------------------------------


def test_hook_impetus_resolve_model(hooked: Hooked, echo_file: Path, tmp_path: Path) -> None:
    pm = make_plugin_manager(["impetus_hooks"])
    config = Config(home=tmp_path, socket=tmp_path / "s")
    spec = pm.hook.impetus_resolve_model(ref=f"hooked:{echo_file}", config=config)
    assert spec.name == f"hooked:{echo_file}" and spec.path == str(echo_file.resolve()) and spec.source == "hooks"
    assert pm.hook.impetus_resolve_model(ref=str(echo_file), config=config).source == "path"  # passed on to the built-in
    model = f"hooked:{echo_file}"
    with hooked.daemon.connect() as conn:
        assert chat(conn, model, "resolved")["result"]["message"]["content"] == "resolved"
        assert loaded(conn, model)["name"] == model
    assert {"hook": "resolve_model", "pid": hooked.daemon.pid, "ref": model} in hooked.records("resolve_model")


def test_hook_impetus_select_backend(hooked: Hooked, echo_file: Path) -> None:
    pm = make_plugin_manager(["impetus_echo", "impetus_hooks"])
    backends = build_registries(pm).backends
    offered = [backends.get("echo"), backends.get("echo-tiered")]
    assert pm.hook.impetus_select_backend(spec=_spec(f"hooked:{echo_file}"), backends=offered) == "echo-tiered"
    assert pm.hook.impetus_select_backend(spec=_spec(str(echo_file)), backends=offered) == "echo"  # the built-in: first by name
    model = f"hooked:{echo_file}"
    with hooked.daemon.connect() as conn:
        chat(conn, model)
        chat(conn, str(echo_file))
        assert loaded(conn, model)["backend"] == "echo-tiered"
        assert loaded(conn, str(echo_file.resolve()))["backend"] == "echo"
    assert {"model": model, "offered": ["echo", "echo-tiered"]}.items() <= hooked.records("select_backend")[-1].items()


def _spec(name: str) -> Any:
    from impetusd.plugin_api import ModelSpec

    return ModelSpec(name=name, path=name.removeprefix("hooked:"), format="echo")


# --- lifecycle and observation (daemon only) -----------------------------------------


def test_hook_impetus_startup(hooked: Hooked) -> None:
    assert wait_until(lambda: hooked.records("startup"), timeout=10)
    [started] = hooked.records("startup")
    assert started["pid"] == hooked.daemon.pid  # awaited inside the daemon
    records = hooked.records()
    first_model_event = next((i for i, r in enumerate(records) if r.get("model")), len(records))
    assert records.index(started) < first_model_event  # before any request could load a model


def test_hook_impetus_event(hooked: Hooked, tmp_path: Path) -> None:
    model = tmp_path / "evented.echo"
    model.write_text("0")
    name = str(model.resolve())
    with hooked.daemon.connect() as conn:
        conn.call("models.load", {"model": str(model)})
        chat(conn, str(model))
        conn.call("models.unload", {"model": str(model)})
    assert wait_until(lambda: any(r["kind"] == "model.unloaded" and r["model"] == name for r in hooked.records("event")))
    kinds = [r["kind"] for r in hooked.records("event") if r["model"] == name]
    assert kinds[:2] == ["model.loading", "model.loaded"] and "request.finished" in kinds
    assert all(r["pid"] == hooked.daemon.pid for r in hooked.records("event"))


def test_hook_impetus_shutdown(tmp_path: Path, echo_file: Path) -> None:
    """Called after requests drain, while workers still run: the loaded model's
    ``model.unloaded {reason: stopped}`` event comes after it."""
    h = Hooked(tmp_path)
    h.daemon.start()
    with h.daemon.connect() as conn:
        conn.call("models.load", {"model": str(echo_file)})
    assert h.daemon.stop(signal.SIGTERM) == 0
    hooks = [r["hook"] for r in h.records() if r["hook"] != "event" or r["kind"] == "model.unloaded"]
    assert hooks == ["startup", "shutdown", "event"]
    assert h.records("shutdown")[0]["pid"] == h.daemon.pid
