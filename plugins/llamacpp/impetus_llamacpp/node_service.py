"""``impetusctl node install|uninstall``: ``impetusctl node serve`` as a login service,
like impetusd's (``impetusctl/service/manage.py``, whose helpers it uses): a systemd --user unit on Linux, a launchd agent on
macOS. The service manager restarts ``node serve`` if it crashes; ``node serve``
itself restarts its rpc-server(s) with a backoff. One node service per user.

The files in the repository's ``launchd/`` directory are these renderings with the
placeholder paths (a test keeps them identical)."""

from __future__ import annotations

import os
import plistlib
import shutil
import sys
from pathlib import Path

import msgspec

from impetusctl.service import manage

LABEL = "dev.impetus.node"
UNIT = "impetus-node"


class NodeService(msgspec.Struct, frozen=True):
    impetusctl: str  # absolute path of the impetusctl script
    args: list[str]  # node serve's options (--host, --port, ...)
    logs: str  # launchd log directory
    home: str | None = None  # IMPETUS_HOME if not the default


def impetusctl_path() -> str:
    beside = Path(sys.executable).with_name("impetusctl")
    found = str(beside) if beside.exists() else shutil.which("impetusctl")
    if not found:
        raise manage.ServiceError("cannot find the impetusctl script; install Impetus first (pip install impetus)")
    return str(Path(found).absolute())


def launchd_plist(svc: NodeService) -> bytes:
    env = {"PYTHONUNBUFFERED": "1"}
    if svc.home:
        env["IMPETUS_HOME"] = svc.home
    plist = {
        "Label": LABEL,
        "ProgramArguments": [svc.impetusctl, "node", "serve", *svc.args],
        "RunAtLoad": True,
        # Restarted after a crash, not after a clean exit (SIGTERM stops node serve with 0).
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 10,
        "ExitTimeOut": 10,
        "ProcessType": "Background",
        "EnvironmentVariables": env,
        "StandardOutPath": f"{svc.logs}/impetus-node.log",
        "StandardErrorPath": f"{svc.logs}/impetus-node.log",
    }
    return plistlib.dumps(plist, sort_keys=False)


def systemd_service(svc: NodeService) -> str:
    env = f"Environment=IMPETUS_HOME={svc.home}\n" if svc.home else ""
    return f"""# Impetus: a compute node (llama.cpp rpc-server) as a systemd --user service, started at login.
[Unit]
Description=Impetus compute node (llama.cpp rpc-server)
After=network-online.target
# Restarted after a crash, not after a clean exit; at most 5 starts in 60 s.
StartLimitIntervalSec=60
StartLimitBurst=5

[Service]
Type=simple
ExecStart={svc.impetusctl} node serve {" ".join(svc.args)}
{env}Environment=PYTHONUNBUFFERED=1
Restart=on-failure
RestartSec=2
# 2: bad options (a non-loopback --host without --allow-remote); a restart cannot help.
RestartPreventExitStatus=2
# node serve stops its rpc-server(s) on SIGTERM.
TimeoutStopSec=10
KillMode=mixed

[Install]
WantedBy=default.target
"""


def unit_path(platform: str, home_dir: Path) -> Path:
    if platform == "darwin":
        return home_dir / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    return home_dir / ".config" / "systemd" / "user" / f"{UNIT}.service"


def files_for(platform: str, svc: NodeService, home_dir: Path) -> dict[Path, bytes]:
    content = launchd_plist(svc) if platform == "darwin" else systemd_service(svc).encode()
    return {unit_path(platform, home_dir): content}


def service_for(args: list[str]) -> NodeService:
    logs = str(Path.home() / "Library" / "Logs" / "Impetus") if manage.platform() == "darwin" else ""
    return NodeService(impetusctl=impetusctl_path(), args=args, logs=logs, home=os.environ.get("IMPETUS_HOME"))


def placeholder(platform: str) -> NodeService:
    """What the files in ``launchd/`` are rendered with."""
    args = ["--host", "127.0.0.1", "--port", "50052"]
    if platform == "darwin":
        return NodeService(impetusctl="/Users/USER/.local/bin/impetusctl", args=args, logs="/Users/USER/Library/Logs/Impetus")
    return NodeService(impetusctl="%h/.local/bin/impetusctl", args=args, logs="")


def install(args: list[str], start: bool = True) -> list[str]:
    """Write the file (only if it differs) and start the service. Returns what changed."""
    plat = manage.platform()
    svc = service_for(args)
    files = files_for(plat, svc, Path.home())
    changed = manage.write_files(files)
    if plat == "darwin":
        Path(svc.logs).mkdir(parents=True, exist_ok=True)
    if not start:
        return changed
    if plat == "darwin":
        plist_path, plist = next(iter(files.items()))
        exit_timeout = float(plistlib.loads(plist).get("ExitTimeOut", 10))
        manage.launchd_load(f"gui/{os.getuid()}", str(plist_path), reload=bool(changed), exit_timeout=exit_timeout, label=LABEL)
    else:
        manage.run(["systemctl", "--user", "daemon-reload"])
        manage.run(["systemctl", "--user", "enable", "--now", f"{UNIT}.service"])
        if changed:
            manage.run(["systemctl", "--user", "try-restart", f"{UNIT}.service"], check=False)
    return changed


def uninstall() -> list[str]:
    plat = manage.platform()
    return manage.remove_service(plat, [unit_path(plat, Path.home())], LABEL, [f"{UNIT}.service"])
