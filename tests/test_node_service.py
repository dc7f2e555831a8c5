"""``impetusctl node install|uninstall``: a compute node (``node serve``) as a login
service, like impetusd's (tests/test_service.py): the files, systemd's own check of
the unit, the unit's command line serving for real, and the launchd agent loaded
through tests/fakes/launchctl."""

from __future__ import annotations

import json
import os
import plistlib
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import short_socket, wait_until

from impetus_llamacpp import node_service
from impetus_llamacpp.nodes import Node, probe

REPO = Path(__file__).parent.parent
FAKES = Path(__file__).parent / "fakes"
RPC_SERVER = os.environ.get("IMPETUS_RPC_SERVER") or str(Path(sys.prefix) / "libexec" / "impetus" / "rpc-server")


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive free loopback ports."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = int(s.getsockname()[1])
        if first + n > 65535:
            continue
        try:
            for p in range(first, first + n):
                with socket.create_server(("127.0.0.1", p)):
                    pass
        except OSError:
            continue
        return first
    raise AssertionError("no run of free ports")


def ctl(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home)}
    env.pop("IMPETUS_HOME", None)
    return subprocess.run([sys.executable, "-m", "impetusctl", *args], env=env, capture_output=True, text=True, timeout=60)


def test_node_service_repository_files_are_the_rendered_ones() -> None:
    assert (REPO / "launchd" / "dev.impetus.node.plist").read_bytes() == node_service.launchd_plist(node_service.placeholder("darwin"))
    assert (REPO / "launchd" / "impetus-node.service").read_text() == node_service.systemd_service(node_service.placeholder("linux"))


def test_node_plist_runs_node_serve_and_restarts_only_after_a_crash() -> None:
    plist = plistlib.loads((REPO / "launchd" / "dev.impetus.node.plist").read_bytes())
    assert plist["Label"] == "dev.impetus.node" and plist["RunAtLoad"] is True
    assert plist["ProgramArguments"] == ["/Users/USER/.local/bin/impetusctl", "node", "serve", "--host", "127.0.0.1", "--port", "50052"]
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ProcessType"] in {"Background", "Standard", "Adaptive", "Interactive"}
    assert "Sockets" not in plist and plist["StandardErrorPath"].startswith("/Users/USER/Library/Logs/Impetus/")


def test_node_install_refuses_a_non_loopback_host_without_the_flag(tmp_path: Path) -> None:
    done = ctl(tmp_path, "node", "install", "--no-start", "--host", "0.0.0.0")
    assert done.returncode == 2 and "--allow-remote" in done.stderr
    assert not (tmp_path / ".config").exists()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (.ci/run installs it)")
def test_node_unit_passes_systemd_analyze_and_its_command_serves(tmp_path: Path) -> None:
    assert os.access(RPC_SERVER, os.X_OK), f"no rpc-server at {RPC_SERVER}: run scripts/setup"
    port = free_ports(2)
    first = ctl(tmp_path, "node", "install", "--no-start", "--port", str(port), "--clients", "2")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("wrote ") == 1
    again = ctl(tmp_path, "node", "install", "--no-start", "--port", str(port), "--clients", "2")
    assert "already up to date" in again.stdout  # idempotent
    unit = tmp_path / ".config" / "systemd" / "user" / "impetus-node.service"
    text = unit.read_text()
    [exec_start] = [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ExecStart=")]
    assert exec_start == f"{Path(sys.executable).with_name('impetusctl')} node serve --host 127.0.0.1 --port {port} --clients 2"
    runtime = short_socket().parent
    runtime.mkdir(mode=0o700)
    verified = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(unit)],
        env={**os.environ, "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr
    # what systemd would run: the unit's own command line, with the environment a unit gives
    argv = shlex.split(exec_start)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1", "IMPETUS_RPC_SERVER": RPC_SERVER}
    env.update({k: v for k, v in os.environ.items() if k == "PYTHONPATH"})  # this checkout's code, when not installed
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for p in (port, port + 1):
            assert wait_until(lambda p=p: probe(Node("n", "127.0.0.1", p)).state == "ready", timeout=20), f"port {p}"
    finally:
        proc.send_signal(signal.SIGTERM)  # what systemctl stop sends
        assert proc.wait(timeout=20) == 0  # a clean exit: Restart=on-failure leaves it stopped
    removed = ctl(tmp_path, "--json", "node", "uninstall")
    assert len(json.loads(removed.stdout)["removed"]) == 1 and not unit.exists()


def test_node_install_on_macos_loads_the_agent(tmp_path: Path) -> None:
    state = tmp_path / "launchd"
    env = {**os.environ, "HOME": str(tmp_path), "PATH": f"{FAKES}{os.pathsep}{os.environ['PATH']}", "FAKE_LAUNCHD_STATE": str(state)}
    env.update({"FAKE_LAUNCHD_DRAIN_S": "0", "FAKE_LAUNCHD_SETTLE_S": "0"})
    env.pop("IMPETUS_HOME", None)
    code = (
        "import sys; from impetusctl.service import manage; manage.platform = lambda: 'darwin'; "
        "from impetusctl.cli import main; sys.exit(main())"
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60)

    done = run("node", "install", "--port", "50999")
    assert done.returncode == 0, done.stderr
    plist_path = tmp_path / "Library" / "LaunchAgents" / "dev.impetus.node.plist"
    assert json.loads((state / "state.json").read_text())["loaded"] == {"dev.impetus.node": str(plist_path)}
    assert plistlib.loads(plist_path.read_bytes())["ProgramArguments"][1:] == ["node", "serve", "--host", "127.0.0.1", "--port", "50999"]
    gone = run("node", "uninstall")
    assert gone.returncode == 0 and not plist_path.exists()
    assert json.loads((state / "state.json").read_text())["loaded"] == {}
