"""The service files, rendered for this installation.

The files in the repository's ``launchd/`` directory are these renderings with
placeholder paths (a test keeps them identical), so what is reviewed there is
what ``impetusctl service install`` writes.
"""

from __future__ import annotations

import plistlib
from pathlib import Path

import msgspec

LABEL = "dev.impetus.impetusd"
UNIT = "impetusd"


class Paths(msgspec.Struct, frozen=True):
    impetusd: str  # absolute path of the impetusd script
    socket: str  # launchd: absolute path; systemd: may use %t
    logs: str  # launchd log directory
    home: str | None = None  # IMPETUS_HOME if not the default


def launchd_plist(paths: Paths) -> bytes:
    # Exit 0 when a restart cannot help (bad config, socket path too long, another
    # daemon): KeepAlive cannot name an exit status, and exit 0 is not restarted.
    env = {"PYTHONUNBUFFERED": "1", "IMPETUS_CANNOT_START_STATUS": "0"}
    if paths.home:
        env["IMPETUS_HOME"] = paths.home
    plist = {
        "Label": LABEL,
        "ProgramArguments": [paths.impetusd],
        "RunAtLoad": True,
        # Restarted after a crash, not after a clean exit (impetusctl service stop, daemon.shutdown).
        # Errors a restart cannot fix exit 0 (IMPETUS_CANNOT_START_STATUS below).
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 10,
        "ExitTimeOut": 30,  # SIGTERM drains for up to 20 s
        "ProcessType": "Interactive",
        "EnvironmentVariables": env,
        "StandardOutPath": f"{paths.logs}/impetusd.log",
        "StandardErrorPath": f"{paths.logs}/impetusd.log",
        # launchd owns the socket; impetusd adopts it with launch_activate_socket("Listeners").
        "Sockets": {"Listeners": {"SockPathName": paths.socket, "SockPathMode": 0o600, "SockFamily": "Unix", "SockType": "stream"}},
    }
    return plistlib.dumps(plist, sort_keys=False)


def systemd_socket(paths: Paths) -> str:
    return f"""# Impetus: systemd --user socket; the first connection starts impetusd.service.
[Unit]
Description=Impetus local LLM daemon socket

[Socket]
ListenStream={paths.socket}
SocketMode=0600
DirectoryMode=0700
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
"""


def systemd_service(paths: Paths) -> str:
    env = f"Environment=IMPETUS_HOME={paths.home}\n" if paths.home else ""
    return f"""# Impetus: systemd --user service, started by impetusd.socket or at login.
[Unit]
Description=Impetus local LLM daemon
Requires={UNIT}.socket
After={UNIT}.socket
# Restarted after a crash, not after a clean exit; at most 5 starts in 60 s.
StartLimitIntervalSec=60
StartLimitBurst=5

[Service]
Type=simple
ExecStart={paths.impetusd}
{env}Environment=PYTHONUNBUFFERED=1
Restart=on-failure
RestartSec=2
# 78: impetusd cannot start (bad config, socket path too long, another daemon); a restart cannot help.
RestartPreventExitStatus=78
# SIGTERM drains in-flight requests for up to 20 s; workers are its children.
TimeoutStopSec=30
KillMode=mixed

[Install]
WantedBy=default.target
"""


def files_for(platform: str, paths: Paths, home_dir: Path) -> dict[Path, bytes]:
    """Where each file goes for ``platform`` ("darwin" or "linux")."""
    if platform == "darwin":
        return {home_dir / "Library" / "LaunchAgents" / f"{LABEL}.plist": launchd_plist(paths)}
    units = home_dir / ".config" / "systemd" / "user"
    return {
        units / f"{UNIT}.socket": systemd_socket(paths).encode(),
        units / f"{UNIT}.service": systemd_service(paths).encode(),
    }


def placeholder_paths(platform: str) -> Paths:
    """The paths the files in ``launchd/`` are rendered with."""
    if platform == "darwin":
        return Paths(impetusd="/Users/USER/.local/bin/impetusd", socket="/Users/USER/.impetus/run/impetusd.sock", logs="/Users/USER/Library/Logs/Impetus")
    return Paths(impetusd="%h/.local/bin/impetusd", socket="%t/impetus/impetusd.sock", logs="")
