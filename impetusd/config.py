"""Configuration: flag > environment > ``$IMPETUS_HOME/config.toml`` > defaults."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from impetusd.protocol.errors import InvalidParams

DEFAULT_MAX_LINE = 16 * 1024 * 1024
DEFAULT_CLIENT_BUFFER = 8 * 1024 * 1024

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")


def parse_size(value: int | float | str, field: str) -> int:
    """Bytes from a number or a string such as ``"8GB"``, ``"512MiB"``, ``"2g"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number, scale = float(value), 1
    else:
        m = _SIZE.match(str(value).lower())
        if m is None or m[2] not in _UNITS:
            raise InvalidParams(f"{field}: cannot parse {value!r} as a size (e.g. 8GB, 512MiB, or bytes)", field=field)
        number, scale = float(m[1]), _UNITS[m[2]]
    size = int(number * scale)
    if size <= 0:
        raise InvalidParams(f"{field}: must be more than 0 bytes", field=field)
    return size


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    home: Path
    socket: Path
    log_level: str = "INFO"
    max_line_bytes: int = DEFAULT_MAX_LINE
    keep_alive_s: float = 300.0
    shutdown_grace_s: float = 20.0
    worker_start_timeout_s: float = 120.0
    default_max_tokens: int = 512
    default_temperature: float = 0.0
    plugins: list[str] = []
    disabled_plugins: list[str] = []
    backend: dict[str, str] = {}  # format -> preferred backend name
    # resilience and limits (docs/SECURITY.md)
    max_connections: int = 256
    max_queued_per_model: int = 64  # requests waiting behind the running one
    max_client_buffer_bytes: int = DEFAULT_CLIENT_BUFFER  # unsent replies per client
    max_batch_items: int = 1000  # requests in one batch line; more: the batch is refused whole
    max_requests_per_connection: int = 64  # running at once per connection; past it the connection is not read
    crash_limit: int = 5  # crashes within crash_window_s that open the circuit
    crash_window_s: float = 60.0
    restart_backoff_s: float = 0.5  # first restart delay after a crash; doubles per crash
    restart_backoff_max_s: float = 30.0
    hung_timeout_s: float = 120.0  # an active request with no output this long: worker killed
    max_concurrent_pulls: int = 2
    pull_attempts: int = 8  # per file, counting the first
    pull_backoff_s: float = 1.0  # first retry delay; doubles each time, with jitter, capped at 60 s
    pull_timeout_s: float = 60.0  # a transfer that receives nothing for this long is retried
    # thermal-aware scheduling (docs/design.md)
    thermal_poll_s: float = 3.0  # how often monitors' thermal levels are read
    thermal_backoff_level: Literal["fair", "serious", "critical"] = "serious"  # at or above: back off
    thermal_max_batch: int = 1  # decode batch size while backing off
    thermal_prefill_chunk: int = 128  # prompt tokens per prefill step while backing off (engines keep a smaller default)
    # residency (docs/design.md, Residency)
    memory_budget_bytes: int | None = None  # None: memory_budget_fraction of RAM / the cgroup limit
    memory_budget_fraction: float = 0.8
    memory_estimate_context: int = 4096  # tokens of KV cache reckoned per model
    spare_worker: bool = False  # keep one pre-started worker per backend (faster cold loads, ~100 MB idle)
    # prompt caches (per loaded model, in its worker; 0 turns a tier off)
    prompt_cache_memory_bytes: int = 256 * 1024 * 1024
    prompt_cache_disk_bytes: int = 1024 * 1024 * 1024  # per model, under $IMPETUS_HOME/cache/prompts
    worker_blas: str = "auto"  # preload OpenBLAS into workers when installed ("off", or a library path)
    # each backend's own settings ([backends.<name>] in config.toml), handed to it as read
    # (BackendSpec.worker_env); docs/plugins.md and each backend's docs say what they take
    backends: dict[str, dict[str, Any]] = {}
    kv_cache_type: Literal["f16", "q8_0", "q4_0"] = "f16"  # per load: models.load kv_type
    flash_attn: Literal["auto", "on", "off"] = "auto"  # per load: models.load flash_attn
    nodes: list[str] = []  # compute nodes (names from nodes.list) a load uses when models.load names none


class FileConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What ``config.toml`` may set (every field optional)."""

    socket: str | None = None
    log_level: str | None = None
    max_line_bytes: int | None = None
    keep_alive_s: float | None = None
    shutdown_grace_s: float | None = None
    worker_start_timeout_s: float | None = None
    default_max_tokens: int | None = None
    default_temperature: float | None = None
    plugins: list[str] | None = None
    disabled_plugins: list[str] | None = None
    backend: dict[str, str] | None = None
    max_connections: int | None = None
    max_queued_per_model: int | None = None
    max_client_buffer_bytes: int | None = None
    max_batch_items: int | None = None
    max_requests_per_connection: int | None = None
    crash_limit: int | None = None
    crash_window_s: float | None = None
    restart_backoff_s: float | None = None
    restart_backoff_max_s: float | None = None
    hung_timeout_s: float | None = None
    max_concurrent_pulls: int | None = None
    pull_attempts: int | None = None
    pull_backoff_s: float | None = None
    pull_timeout_s: float | None = None
    thermal_poll_s: float | None = None
    thermal_backoff_level: Literal["fair", "serious", "critical"] | None = None
    thermal_max_batch: int | None = None
    thermal_prefill_chunk: int | None = None
    memory_budget_bytes: int | str | None = None  # bytes, or "8GB", "512MiB"
    memory_budget_fraction: float | None = None
    memory_estimate_context: int | None = None
    spare_worker: bool | None = None
    prompt_cache_memory_bytes: int | None = None
    prompt_cache_disk_bytes: int | None = None
    worker_blas: str | None = None
    backends: dict[str, dict[str, Any]] | None = None
    # keys of earlier config files, read into a backend's table (LEGACY_KEYS)
    llama_server: str | None = None
    llamacpp_gpu_layers: int | str | None = None
    kv_cache_type: Literal["f16", "q8_0", "q4_0"] | None = None
    flash_attn: Literal["auto", "on", "off"] | None = None
    nodes: list[str] | None = None


# Keys of earlier config files, each now a key of one backend's table: read into it (a key
# the table sets itself wins).
LEGACY_KEYS: dict[str, tuple[str, str]] = {"llama_server": ("llamacpp", "server"), "llamacpp_gpu_layers": ("llamacpp", "gpu_layers")}


def _legacy_keys(values: dict[str, Any]) -> None:
    if "llamacpp_gpu_layers" in values:  # checked here as it always was, with its old name
        layers = str(values["llamacpp_gpu_layers"]).strip().lower()
        if not (layers.isdigit() or layers in ("all", "auto")):
            raise InvalidParams("llamacpp_gpu_layers must be a number of layers, 'all' or 'auto'", field="llamacpp_gpu_layers")
        values["llamacpp_gpu_layers"] = layers
    for old, (backend, key) in LEGACY_KEYS.items():
        if old in values:
            table = values.setdefault("backends", {}).setdefault(backend, {})
            table.setdefault(key, values.pop(old))


def default_home(env: Mapping[str, str]) -> Path:
    return Path(env.get("IMPETUS_HOME") or Path.home() / ".impetus").expanduser()


PRIVATE_UMASK = 0o077  # what the daemon (and its workers) create: 0700 folders, 0600 files


def make_private_home(home: Path) -> None:
    """Create the state directory 0700, and tighten it if it is ours and looser:
    it holds the registry, logs, converted models and caches of one user."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = home.stat()
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        os.chmod(home, 0o700)


def default_socket(home: Path, env: Mapping[str, str]) -> Path:
    if env.get("IMPETUS_SOCKET"):
        return Path(env["IMPETUS_SOCKET"]).expanduser()
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "impetus" / "impetusd.sock"
    return home / "run" / "impetusd.sock"


def load_config(
    *,
    home: str | os.PathLike[str] | None = None,
    socket: str | os.PathLike[str] | None = None,
    log_level: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    env = os.environ if env is None else env
    home_path = Path(home).expanduser() if home else default_home(env)
    file_cfg = _read_file(home_path / "config.toml")
    values: dict[str, Any] = {k: v for k, v in msgspec.structs.asdict(file_cfg).items() if v is not None}
    if env.get("IMPETUS_LOG_LEVEL"):
        values["log_level"] = env["IMPETUS_LOG_LEVEL"]
    if env.get("IMPETUS_PLUGINS"):
        values["plugins"] = [*values.get("plugins", []), *env["IMPETUS_PLUGINS"].split(",")]
    if env.get("IMPETUS_MAX_LINE_BYTES"):
        values["max_line_bytes"] = int(env["IMPETUS_MAX_LINE_BYTES"])
    if env.get("IMPETUS_MEMORY_BUDGET"):
        values["memory_budget_bytes"] = env["IMPETUS_MEMORY_BUDGET"]
    if values.get("memory_budget_bytes") is not None:
        values["memory_budget_bytes"] = parse_size(values["memory_budget_bytes"], "memory_budget_bytes")
    if not 0.0 < values.get("memory_budget_fraction", 0.8) <= 1.0:
        raise InvalidParams("memory_budget_fraction must be in (0, 1]", field="memory_budget_fraction")
    for field in ("max_batch_items", "max_requests_per_connection", "max_connections", "max_line_bytes"):
        if values.get(field, 1) < 1:
            raise InvalidParams(f"{field} must be at least 1", field=field)
    _legacy_keys(values)
    if values.get("memory_estimate_context", 1) < 1:
        raise InvalidParams("memory_estimate_context must be at least 1 token", field="memory_estimate_context")
    if socket:
        sock = Path(socket).expanduser()
    elif env.get("IMPETUS_SOCKET"):
        sock = Path(env["IMPETUS_SOCKET"]).expanduser()
    elif values.get("socket"):
        sock = Path(values["socket"]).expanduser()
    else:
        sock = default_socket(home_path, env)
    values.pop("socket", None)
    if log_level:
        values["log_level"] = log_level
    return Config(home=home_path, socket=sock, **values)


def _read_file(path: Path) -> FileConfig:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return FileConfig()
    try:
        return msgspec.toml.decode(data, type=FileConfig)
    except msgspec.DecodeError as exc:
        raise InvalidParams(f"{path}: {exc}", path=str(path)) from exc


def parse_keep_alive(value: float | str | None, default: float) -> float | None:
    """Seconds to stay loaded after the last request; None means forever.

    Accepts numbers (seconds) or strings like ``"30s"``, ``"5m"``, ``"1h"``, ``"-1"``.
    Negative keeps the model loaded; 0 unloads after the request.
    """
    if value is None:
        return default
    if isinstance(value, str):
        text = value.strip().lower()
        units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        scale = 1.0
        for suffix in ("ms", "s", "m", "h"):
            if text.endswith(suffix):
                scale, text = units[suffix], text[: -len(suffix)]
                break
        try:
            seconds = float(text) * scale
        except ValueError:
            raise InvalidParams(f"keep_alive: cannot parse {value!r} (use seconds or e.g. '5m')", field="keep_alive") from None
    else:
        seconds = float(value)
    if not math.isfinite(seconds):  # NaN compares false with everything: it would mean forever
        raise InvalidParams(f"keep_alive: {value!r} is not a finite number of seconds (use -1 to stay loaded)", field="keep_alive")
    return None if seconds < 0 else seconds
