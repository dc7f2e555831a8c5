"""Which ``llama-server`` binary a worker runs, and whether it is one Impetus can drive.

In order: ``IMPETUS_LLAMA_SERVER`` (a path), the one scripts/setup built into the
environment (``<prefix>/libexec/impetus/llama-server``), then ``llama-server`` on PATH.
A binary is accepted when its ``--help`` lists every option the engine passes (a
version number says little: builds from source trees without git report build 0).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from impetusd.plugin_api import NoBackend

BINARY_ENV = "IMPETUS_LLAMA_SERVER"
FIX = "run scripts/setup (it builds llama-server), or point IMPETUS_LLAMA_SERVER at a llama-server binary"
# The options the engine uses (server.py); older builds lack some of them.
REQUIRED_OPTIONS = ("--kv-unified", "--no-context-shift", "--cache-ram", "--no-webui", "--pooling", "--embedding", "--slots")


@dataclass(frozen=True)
class Binary:
    path: str
    version: str  # e.g. "version: 1 (0c1e570)", llama-server's own words
    built_with: str  # the compiler and target line of --version
    flags: str  # the cmake flags scripts/setup used, when it built this one

    @property
    def variant(self) -> str:
        """Which GPU code the build has: "cuda", "metal", "cpu", or "unknown" (not built by
        scripts/setup and silent about it), read off the flags file or ``--version``'s lines."""
        if "-DGGML_CUDA=ON" in self.flags:
            return "cuda"
        if "-DGGML_METAL=ON" in self.flags:
            return "metal"
        if self.flags:
            return "cpu"
        text = self.built_with + " " + self.devices
        return "cuda" if "CUDA" in text else "metal" if "Metal" in text or "MTL" in text else "unknown"

    devices: str = ""  # what --version printed about the devices it found (a CUDA build names them)

    @property
    def llguidance(self) -> str | None:
        """The llguidance version the grammar sampler was built with (scripts/setup), or None:
        llama.cpp's GBNF sampler (a build of unknown flags counts as one without)."""
        return _llguidance(self.flags)


LLGUIDANCE_FLAG = "-DIMPETUS_LLGUIDANCE="


def _llguidance(flags: str) -> str | None:
    for flag in flags.split():
        if flag.startswith(LLGUIDANCE_FLAG):
            return flag[len(LLGUIDANCE_FLAG) :]
    return None


def declared_llguidance() -> bool:
    """In the daemon, without running anything: whether the binary a worker will run was
    built with llguidance (its flags file says so)."""
    for path, _ in candidates():
        if os.path.exists(path):
            flags_file = Path(path + ".flags")
            return flags_file.is_file() and _llguidance(flags_file.read_text()) is not None
    return False


def installed_path() -> Path:
    return Path(sys.prefix) / "libexec" / "impetus" / "llama-server"


def candidates() -> list[tuple[str, str]]:
    """(path, where it came from), in the order they are tried."""
    named = os.environ.get(BINARY_ENV)
    if named:
        return [(named, BINARY_ENV)]
    found = [(str(installed_path()), "scripts/setup")]
    on_path = shutil.which("llama-server")
    if on_path:
        found.append((on_path, "PATH"))
    return found


def _run(path: str, arg: str) -> str:
    done = subprocess.run([path, arg], capture_output=True, text=True, timeout=30, check=False)
    return done.stdout + done.stderr


def check(path: str, source: str) -> Binary:
    if not os.access(path, os.X_OK):
        raise NoBackend(f"llama-server {path} (from {source}) is not an executable file; {FIX}", backend="llamacpp")
    try:
        version = _run(path, "--version")
        usage = _run(path, "--help")
    except (OSError, subprocess.SubprocessError) as exc:
        raise NoBackend(f"llama-server {path} (from {source}) does not run ({exc}); {FIX}", backend="llamacpp") from exc
    missing = [opt for opt in REQUIRED_OPTIONS if opt not in usage]
    lines = [line.strip() for line in version.splitlines() if line.strip()]
    said = next((line for line in lines if line.startswith("version:")), "")
    if missing or not said:
        raise NoBackend(
            f"llama-server {path} (from {source}) is too old or not llama-server ({said or 'no version'}; lacks {', '.join(missing) or '--version'}); {FIX}",
            backend="llamacpp",
        )
    built = next((line for line in lines if line.startswith("built with")), "")
    flags_file = Path(path + ".flags")
    flags = " ".join(flags_file.read_text().split()) if flags_file.is_file() else ""
    devices = " | ".join(line for line in lines if "CUDA" in line or "Metal" in line or "MTL" in line)
    return Binary(path=path, version=said, built_with=built, flags=flags, devices=devices)


def find() -> Binary:
    """The binary to run, checked; ``NoBackend`` naming the fix when there is none."""
    tried = []
    for path, source in candidates():
        if source != BINARY_ENV and not os.path.exists(path):
            tried.append(path)
            continue
        return check(path, source)
    raise NoBackend(f"the llama.cpp backend needs llama-server, and there is none (looked at {', '.join(tried)} and PATH); {FIX}", backend="llamacpp")
