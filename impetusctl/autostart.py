"""Start impetusd in the background when nothing answers, and wait until it is ready."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from impetusd.local import Config, make_private_home

from .client import Client, DaemonUnavailable


def log_path(config: Config) -> Path:
    return config.home / "logs" / "impetusd.log"


def connect(config: Config, autostart: bool, timeout: float = 60.0) -> Client:
    try:
        return Client(config.socket)
    except DaemonUnavailable:
        if not autostart:
            raise DaemonUnavailable(f"no daemon answers on {config.socket}; start it with 'impetusd' (or drop --no-autostart)") from None
    return start_daemon(config, timeout)


def start_daemon(config: Config, timeout: float) -> Client:
    log = log_path(config)
    make_private_home(config.home)
    log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "impetusd", "--socket", str(config.socket), "--home", str(config.home)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,  # outlives this command; not killed by its Ctrl-C
            env=os.environ.copy(),
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return Client(config.socket)
        except DaemonUnavailable:
            pass
        code = proc.poll()
        if code is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise DaemonUnavailable(f"impetusd exited with status {code} while starting: {' / '.join(tail)} (log: {log})")
        time.sleep(0.05)
    raise DaemonUnavailable(f"impetusd did not answer on {config.socket} within {timeout:.0f} s (log: {log})")
