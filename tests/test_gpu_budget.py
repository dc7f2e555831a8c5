"""GPU memory in the memory budget, without a GPU: the planning functions with real Structs, and
a daemon whose GPU is reported by a real hardware-monitor plugin (tests/plugins/impetus_fakegpu.py)
through the real hooks, with a backend that offloads. The paths that need a GPU are in test_gpu.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import DaemonProcess, pid_alive, wait_until

from impetusd.protocol.api import MemoryEstimate
from impetusd.residency.budget import GPU_RUNTIME_BYTES, split
from impetusd.residency.resident import MemoryUse, plan_room

GIB = 1 << 30
MIB = 1 << 20


def use(name: str, host: int, gpu: int = 0, last_used: float = 0.0, busy: bool = False) -> MemoryUse:
    return MemoryUse(name=name, bytes=host, busy=busy, last_used=last_used, gpu_bytes=gpu)


def test_the_estimate_is_split_by_the_offloaded_layers() -> None:
    need = MemoryEstimate(total_bytes=5 * GIB, weights_bytes=3 * GIB, kv_cache_bytes=GIB, overhead_bytes=GIB, context_tokens=4096)
    half = split(need, layers=10, offloaded=5)
    assert half.gpu_bytes == 2 * GIB + GPU_RUNTIME_BYTES and half.gpu_layers == 5
    assert half.total_bytes - half.gpu_bytes == GIB + 2 * GIB  # overhead + the other half of weights and cache
    whole = split(need, layers=10, offloaded=11)  # llama.cpp counts the output layer as one more
    assert whole.gpu_bytes == 4 * GIB + GPU_RUNTIME_BYTES and whole.total_bytes - whole.gpu_bytes == GIB
    none = split(need, layers=10, offloaded=0)
    assert (none.gpu_bytes, none.gpu_layers, none.total_bytes) == (0, 0, 5 * GIB)


def test_room_on_the_gpu_evicts_only_models_on_the_gpu() -> None:
    models = [use("cpu-old", GIB, 0, last_used=1), use("gpu-a", MIB, 6 * GIB, last_used=2), use("gpu-b", MIB, 6 * GIB, last_used=3)]
    room = plan_room(MIB, 64 * GIB, models, gpu_needed=5 * GIB, gpu_budget=16 * GIB)
    assert room.fits and room.evict == ["gpu-a"] and room.short is None  # the CPU-only model is older, and stays
    assert room.gpu_used_bytes == 12 * GIB and room.gpu_available_bytes == 10 * GIB


def test_the_host_side_evicts_any_idle_model_first() -> None:
    models = [use("cpu-old", 3 * GIB, 0, last_used=1), use("gpu-a", GIB, 6 * GIB, last_used=2)]
    room = plan_room(2 * GIB, 5 * GIB, models, gpu_needed=GIB, gpu_budget=16 * GIB)
    assert room.fits and room.evict == ["cpu-old"]


def test_a_gpu_that_lacks_room_is_named_and_nothing_is_evicted() -> None:
    models = [use("busy", MIB, 10 * GIB, last_used=1, busy=True), use("idle", MIB, 2 * GIB, last_used=2)]
    room = plan_room(MIB, 64 * GIB, models, gpu_needed=7 * GIB, gpu_budget=16 * GIB)
    assert not room.fits and room.short == "gpu" and room.evict == [] and room.busy == ["busy"]
    assert room.gpu_available_bytes == 6 * GIB
    assert plan_room(8 * GIB, 4 * GIB, models, gpu_needed=GIB, gpu_budget=16 * GIB).short == "host"
    # Without a GPU budget, the GPU part is not checked (no monitor reports a GPU).
    assert plan_room(MIB, 64 * GIB, models, gpu_needed=70 * GIB).fits


@pytest.fixture
def gpu_daemon(tmp_path_factory: pytest.TempPathFactory):
    d = DaemonProcess(
        tmp_path_factory.mktemp("gpu"),
        config=f"memory_budget_bytes = {16 * GIB}\n",
        IMPETUS_PLUGINS="impetus_echo,impetus_fakegpu",
        IMPETUS_FAKE_GPU_BYTES=str(5 * GIB // 2),
    ).start()
    yield d
    d.stop()


def test_the_budget_counts_gpu_memory_and_evicts_on_the_side_that_lacks_it(gpu_daemon: DaemonProcess, tmp_path: Path) -> None:
    for name in ("cpu", "a", "b", "big"):
        (tmp_path / f"{name}.echo").write_text("delay_s = 0\n")
    cpu, a, b, big = (str((tmp_path / f"{n}.echo").resolve()) for n in ("cpu", "a", "b", "big"))
    with gpu_daemon.connect() as conn:
        conn.call("models.load", {"model": cpu, "backend": "echo"})  # host memory only, the least recently used
        first = conn.call("models.load", {"model": a, "backend": "gpuecho"})["result"]["model"]
        # The whole model fits the 2.5 GiB GPU: all 10 layers, 1 GiB of weights and the GPU runtime there.
        assert first["estimate"]["gpu_layers"] == 10 and first["engine"]["gpu_layers"] == 10
        assert first["estimate"]["gpu_bytes"] == GIB + 512 * MIB == first["gpu_memory_bytes"]
        memory = conn.call("models.loaded")["result"]["memory"]
        assert memory["gpu_budget_bytes"] == 5 * GIB // 2 and memory["gpu_used_bytes"] == GIB + 512 * MIB and memory["gpus"] == ["Fake GPU"]
        # b needs 1.5 GiB of GPU too: a goes, and the CPU-only model, older but on the host, stays.
        second = conn.call("models.load", {"model": b, "backend": "gpuecho"})["result"]["model"]
        assert wait_until(lambda: not pid_alive(first["pid"]), timeout=5)
        names = sorted(m["name"] for m in conn.call("models.loaded")["result"]["models"])
        assert names == sorted([cpu, b])
        # All 10 layers of a 3 GiB model can never fit the GPU: refused, naming the GPU side; nothing unloaded.
        err = conn.call("models.load", {"model": big, "backend": "gpuecho", "n_gpu_layers": 10})["error"]
        assert err["data"]["name"] == "InsufficientMemory" and err["data"]["side"] == "gpu" and err["data"]["never_fits"] is True
        assert err["data"]["needed_bytes"] == 3 * GIB + 512 * MIB and err["data"]["budget_bytes"] == 5 * GIB // 2
        assert "GPU memory" in err["message"] and pid_alive(second["pid"])
        # Left to the backend, it offloads what fits (6 layers in 2 GiB), and b makes room.
        third = conn.call("models.load", {"model": big, "backend": "gpuecho"})["result"]["model"]
        assert third["estimate"]["gpu_layers"] == 6 and third["engine"]["gpu_layers"] == 6
        assert third["estimate"]["gpu_bytes"] == int(3 * GIB * 0.6) + 512 * MIB
        assert third["estimate"]["total_bytes"] - third["estimate"]["gpu_bytes"] == 32 * MIB + 3 * GIB - int(3 * GIB * 0.6)
        assert wait_until(lambda: not pid_alive(second["pid"]), timeout=5)
        # A backend that cannot offload refuses the parameter by name.
        err = conn.call("models.load", {"model": str(tmp_path / "b.echo"), "backend": "echo", "n_gpu_layers": 2})["error"]
        assert err["data"]["name"] == "UnsupportedParameter" and err["data"]["param"] == "n_gpu_layers" and "gpu" in err["message"].lower()


def test_doctor_names_the_gpu_for_a_backend_that_offloads() -> None:
    """``placement`` asks the backend's own plan (here the fake plugin's real BackendSpec)."""
    import impetus_echo
    import impetus_fakegpu

    from impetusd.plugin.registries import PluginRegistry
    from impetusd.residency.choice import placement

    registry: PluginRegistry = PluginRegistry("backend")
    impetus_fakegpu.impetus_register_backends(registry)
    impetus_echo.impetus_register_backends(registry)
    gpuecho, echo = registry.get("gpuecho"), registry.get("echo")
    assert placement(gpuecho, ["Fake GPU"], 4 * GIB) == "GPU (Fake GPU)"
    assert placement(gpuecho) == "CPU" and placement(echo, ["Fake GPU"], 4 * GIB) == "CPU"


def test_the_cli_loads_with_gpu_layers_and_shows_gpu_memory(gpu_daemon: DaemonProcess, tmp_path: Path) -> None:
    model = tmp_path / "cli.echo"
    model.write_text("delay_s = 0\n")

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "impetusctl", "--no-autostart", *args], env=gpu_daemon.env, capture_output=True, text=True, timeout=120)

    done = ctl("load", str(model), "--backend", "gpuecho", "--gpu-layers", "5")
    assert done.returncode == 0 and "5 layers on the GPU" in done.stdout, done.stderr
    table = ctl("ps").stdout
    assert "GPU MEMORY" in table and " 1.1 GB " in table, table  # half of 1 GiB of weights + 512 MiB of runtime
    assert "gpu memory: 1.1 GB of 2.7 GB (Fake GPU)" in table, table
    refused = ctl("load", str(model), "--backend", "echo", "--gpu-layers", "1")
    assert refused.returncode != 0 and "n_gpu_layers" in refused.stderr + refused.stdout
