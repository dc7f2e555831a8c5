"""Service files (launchd plist, systemd units), their installation, and a daemon
started with an inherited listening socket, as systemd starts it."""

from __future__ import annotations

import json
import os
import plistlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import PLUGIN_PATH, RawConnection, pid_alive, short_socket, wait_until

from impetusctl.service import render

REPO = Path(__file__).parent.parent


def test_repository_files_are_the_rendered_ones() -> None:
    assert (REPO / "launchd" / "dev.impetus.impetusd.plist").read_bytes() == render.launchd_plist(render.placeholder_paths("darwin"))
    assert (REPO / "launchd" / "impetusd.socket").read_text() == render.systemd_socket(render.placeholder_paths("linux"))
    assert (REPO / "launchd" / "impetusd.service").read_text() == render.systemd_service(render.placeholder_paths("linux"))


def test_plist_keys_and_types() -> None:
    plist = plistlib.loads((REPO / "launchd" / "dev.impetus.impetusd.plist").read_bytes())
    expected_types = {
        "Label": str, "ProgramArguments": list, "RunAtLoad": bool, "KeepAlive": dict, "ThrottleInterval": int,
        "ExitTimeOut": int, "ProcessType": str, "EnvironmentVariables": dict, "StandardOutPath": str,
        "StandardErrorPath": str, "Sockets": dict,
    }
    assert set(plist) == set(expected_types)
    for key, kind in expected_types.items():
        assert isinstance(plist[key], kind), key
    assert plist["KeepAlive"] == {"SuccessfulExit": False}  # restart after a crash, not after a clean exit
    assert plist["ProcessType"] in {"Background", "Standard", "Adaptive", "Interactive"}
    listener = plist["Sockets"]["Listeners"]
    assert listener["SockPathMode"] == 0o600 and listener["SockFamily"] == "Unix" and listener["SockType"] == "stream"
    assert Path(listener["SockPathName"]).is_absolute() and all(isinstance(a, str) for a in plist["ProgramArguments"])
    assert plist["StandardErrorPath"].startswith("/Users/USER/Library/Logs/Impetus/")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (.ci/run installs it)")
def test_installed_units_pass_systemd_analyze(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    first = subprocess.run([sys.executable, "-m", "impetusctl", "service", "install", "--no-start"], env=env, capture_output=True, text=True, check=True)
    assert first.stdout.count("wrote ") == 2
    again = subprocess.run([sys.executable, "-m", "impetusctl", "service", "install", "--no-start"], env=env, capture_output=True, text=True, check=True)
    assert "already up to date" in again.stdout  # idempotent
    units = tmp_path / ".config" / "systemd" / "user"
    service = (units / "impetusd.service").read_text()
    assert f"ExecStart={Path(sys.executable).with_name('impetusd')}" in service
    runtime = short_socket().parent  # %t: the socket's directory, short as on a real system
    runtime.mkdir(mode=0o700)
    done = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(units / "impetusd.socket"), str(units / "impetusd.service")],
        env={**env, "XDG_RUNTIME_DIR": str(runtime)}, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
    removed = subprocess.run([sys.executable, "-m", "impetusctl", "--json", "service", "uninstall"], env=env, capture_output=True, text=True, check=True)
    assert len(json.loads(removed.stdout)["removed"]) == 2 and not (units / "impetusd.service").exists()


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate is not installed (.ci/run installs it)")
def test_daemon_adopts_an_inherited_socket(tmp_path: Path) -> None:
    sock = short_socket()
    sock.parent.mkdir(mode=0o700)
    passed = {"IMPETUS_HOME": str(tmp_path / "home"), "PYTHONPATH": PLUGIN_PATH, "IMPETUS_PLUGINS": "impetus_echo"}
    log = open(tmp_path / "log", "wb")  # noqa: SIM115
    # systemd's own tool: it listens, and on the first connection execs impetusd with
    # LISTEN_FDS=1 and only the environment given with -E, as a unit would.
    cmd = ["systemd-socket-activate", "-l", str(sock), *(f"-E{k}={v}" for k, v in passed.items()), sys.executable, "-m", "impetusd"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    try:
        assert wait_until(sock.exists, 10)
        with RawConnection(sock) as conn:
            info = conn.call("daemon.info")["result"]
        assert info["socket"] == str(sock) and info["pid"] == proc.pid  # exec'd in place
        assert oct(sock.stat().st_mode & 0o777) == oct(0o600)  # tightened on adoption
        assert "adopted the service manager's socket" in (tmp_path / "log").read_text()
        with RawConnection(sock) as conn:
            worker = conn.call("models.load", {"model": str(_echo(tmp_path))})["result"]["model"]["pid"]
            with open(f"/proc/{worker}/environ", "rb") as fh:
                assert b"LISTEN_FDS=" not in fh.read()  # the socket is not the worker's
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        log.close()
    assert sock.exists()  # the service manager's socket is not removed by the daemon
    assert not pid_alive(worker)


def _echo(tmp_path: Path) -> Path:
    path = tmp_path / "m.echo"
    path.write_text("0")
    return path


FAKES = Path(__file__).parent / "fakes"


def _fake_launchd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drain_s: float, settle_s: float) -> Path:
    """Install for macOS against tests/fakes/launchctl (launchd's timing, see there)."""
    from impetusctl.service import manage

    state = tmp_path / "launchd"
    monkeypatch.setattr(manage, "platform", lambda: "darwin")  # the launchd branch; launchctl itself is the fake
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LAUNCHD_STATE", str(state))
    monkeypatch.setenv("FAKE_LAUNCHD_DRAIN_S", str(drain_s))
    monkeypatch.setenv("FAKE_LAUNCHD_SETTLE_S", str(settle_s))
    return state


@pytest.mark.parametrize(("drain_s", "settle_s"), [(2.0, 0.0), (0.5, 1.5)])
def test_reinstall_after_a_plist_change_leaves_the_agent_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drain_s: float, settle_s: float) -> None:
    from impetusctl.service import manage
    from impetusd.config import load_config

    state = _fake_launchd(tmp_path, monkeypatch, drain_s, settle_s)
    config = load_config(home=tmp_path / "home", socket=tmp_path / "run" / "d.sock", env={})
    plist = tmp_path / "Library" / "LaunchAgents" / f"{render.LABEL}.plist"
    assert manage.install(config) == [str(plist)]
    assert json.loads((state / "state.json").read_text())["loaded"] == {render.LABEL: str(plist)}
    monkeypatch.setenv("IMPETUS_HOME", str(tmp_path / "home2"))  # an upgrade that changes the plist
    started = time.monotonic()
    assert manage.install(config) == [str(plist)]
    assert time.monotonic() - started >= drain_s  # it waited for the old job to go
    assert json.loads((state / "state.json").read_text())["loaded"] == {render.LABEL: str(plist)}  # loaded again
    assert b"home2" in plist.read_bytes()
    assert manage.install(config) == []  # unchanged: left running, nothing booted out
    calls = [line.split(" ", 1)[1] for line in (state / "calls.log").read_text().splitlines()]
    assert calls.count(f"bootout gui/{os.getuid()}/{render.LABEL}") == 1
