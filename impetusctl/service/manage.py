"""Install, remove and inspect the login service. Idempotent: installing twice
changes nothing the second time; uninstalling what is not installed is fine."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from impetusd.local import Config

from .render import LABEL, UNIT, Paths, files_for


class ServiceError(RuntimeError):
    """A service-manager command failed; the message says which and why."""


class ServiceStatus(msgspec.Struct, frozen=True):
    platform: str
    manager: str
    installed: bool
    files: list[str]
    running: bool | None
    detail: str


def platform() -> str:
    return "darwin" if sys.platform == "darwin" else "linux"


def impetusd_path() -> str:
    beside = Path(sys.executable).with_name("impetusd")
    found = str(beside) if beside.exists() else shutil.which("impetusd")
    if not found:
        raise ServiceError("cannot find the impetusd script; install Impetus first (pip install impetus)")
    return str(Path(found).absolute())


def paths_for(config: Config) -> Paths:
    home_env = os.environ.get("IMPETUS_HOME")
    if platform() == "darwin":
        logs = Path.home() / "Library" / "Logs" / "Impetus"
        return Paths(impetusd=impetusd_path(), socket=str(config.socket), logs=str(logs), home=home_env)
    return Paths(impetusd=impetusd_path(), socket="%t/impetus/impetusd.sock", logs="", home=home_env)


def run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ServiceError(f"{cmd[0]} is not available on this machine") from None
    if check and done.returncode != 0:
        raise ServiceError(f"'{' '.join(cmd)}' failed: {(done.stderr or done.stdout).strip()}")
    return done


BOOTSTRAP_EIO = 5  # "Bootstrap failed: 5: Input/output error": the label is (still) loaded, or the plist is refused
GONE_MARGIN_S = 10.0  # beyond the plist's ExitTimeOut, for launchd's own bookkeeping
BOOTSTRAP_RETRY_S = 15.0


def _launchd_present(service: str) -> bool:
    return run(["launchctl", "print", service], check=False).returncode == 0


def launchd_load(target: str, plist: str, *, reload: bool, exit_timeout: float, label: str = LABEL) -> None:
    """Load the agent; with ``reload``, boot the running one out first.

    ``launchctl bootout`` returns before launchd has removed the job: the old
    daemon drains after SIGTERM (up to ExitTimeOut), and a ``bootstrap`` meanwhile
    fails with exit 5, which would leave the agent unloaded. So wait until
    ``print`` no longer finds the job, then bootstrap, retrying exit 5 a while."""
    service = f"{target}/{label}"
    if _launchd_present(service):
        if not reload:
            return
        run(["launchctl", "bootout", service], check=False)
        deadline = time.monotonic() + exit_timeout + GONE_MARGIN_S
        while _launchd_present(service):
            if time.monotonic() >= deadline:
                raise ServiceError(f"launchd still has {service} {exit_timeout + GONE_MARGIN_S:.0f} s after 'launchctl bootout'; try again, or log out and in")
            time.sleep(0.2)
    deadline = time.monotonic() + BOOTSTRAP_RETRY_S
    while True:
        done = run(["launchctl", "bootstrap", target, plist], check=False)
        if done.returncode == 0:
            return
        if done.returncode != BOOTSTRAP_EIO or time.monotonic() >= deadline:
            raise ServiceError(f"'launchctl bootstrap {target} {plist}' failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()}")
        time.sleep(0.5)


def write_files(files: dict[Path, bytes]) -> list[str]:
    """Write each file whose content differs (through a temporary file, so a reader never
    sees half of one). Returns the paths written."""
    changed = []
    for path, content in files.items():
        if path.exists() and path.read_bytes() == content:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(content)
        os.replace(tmp, path)
        changed.append(str(path))
    return changed


def install(config: Config, start: bool = True) -> list[str]:
    """Write the files (only if they differ) and start the service. Returns what changed."""
    plat = platform()
    paths = paths_for(config)
    changed = write_files(files_for(plat, paths, Path.home()))
    if plat == "darwin":
        Path(paths.logs).mkdir(parents=True, exist_ok=True)
        Path(paths.socket).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not start:
        return changed
    if plat == "darwin":
        plist_path, plist = next(iter(files_for(plat, paths, Path.home()).items()))
        exit_timeout = float(plistlib.loads(plist).get("ExitTimeOut", 20))
        launchd_load(f"gui/{os.getuid()}", str(plist_path), reload=bool(changed), exit_timeout=exit_timeout)
    else:
        run(["systemctl", "--user", "daemon-reload"])
        run(["systemctl", "--user", "enable", "--now", f"{UNIT}.socket"])
        if changed:
            run(["systemctl", "--user", "try-restart", f"{UNIT}.service"], check=False)
    return changed


def uninstall(config: Config) -> list[str]:
    plat = platform()
    files = files_for(plat, paths_for(config), Path.home())
    return remove_service(plat, list(files), LABEL, [f"{UNIT}.socket", f"{UNIT}.service"])


def remove_service(plat: str, files: list[Path], label: str, units: list[str]) -> list[str]:
    """Stop a login service (launchd ``label``, or systemd ``units``) and delete its files.
    Returns the paths removed."""
    if plat == "darwin":
        run(["launchctl", "bootout", f"gui/{os.getuid()}/{label}"], check=False)
    elif any(p.exists() for p in files):
        run(["systemctl", "--user", "disable", "--now", *units], check=False)
    removed = []
    for path in files:
        if path.exists():
            path.unlink()
            removed.append(str(path))
    if plat == "linux" and removed:
        run(["systemctl", "--user", "daemon-reload"], check=False)
    return removed


def status(config: Config) -> ServiceStatus:
    plat = platform()
    files = list(files_for(plat, paths_for(config), Path.home()))
    installed = all(p.exists() for p in files)
    if plat == "darwin":
        done = run(["launchctl", "print", f"gui/{os.getuid()}/{LABEL}"], check=False) if shutil.which("launchctl") else None
        running = None if done is None else ("state = running" in done.stdout)
        detail = "launchctl not available" if done is None else (done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout else "not loaded")
        return ServiceStatus(platform=plat, manager="launchd", installed=installed, files=[str(p) for p in files], running=running, detail=detail)
    done = run(["systemctl", "--user", "is-active", f"{UNIT}.service", f"{UNIT}.socket"], check=False) if shutil.which("systemctl") else None
    if done is None:
        return ServiceStatus(
            platform=plat, manager="systemd", installed=installed, files=[str(p) for p in files], running=None, detail="systemctl not available"
        )
    states = done.stdout.split()
    ok = done.returncode == 0 or bool(states)
    detail = f"service {states[0]}, socket {states[1]}" if len(states) == 2 else (done.stderr.strip() or "unknown")
    return ServiceStatus(
        platform=plat, manager="systemd", installed=installed, files=[str(p) for p in files], running=(states[:1] == ["active"]) if ok else None, detail=detail
    )


def logs_command(config: Config, follow: bool) -> list[str]:
    if platform() == "darwin":
        log = Path(paths_for(config).logs) / "impetusd.log"
        return ["tail", "-n", "200", *(["-f"] if follow else []), str(log)]
    return ["journalctl", "--user", "-u", f"{UNIT}.service", "-n", "200", "--no-pager", *(["-f"] if follow else [])]
