"""A daemon that cannot start, as launchd and systemd run it: it says why and exits
with a status its service manager does not restart; a socket that accepts but never
answers (a service manager's socket with no daemon behind it) fails the client
within a bound, pointing at the log and ``impetusctl doctor``."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from helpers import PLUGIN_PATH, DaemonProcess, daemon_env, short_socket
from impetusctl.aclient import AsyncDaemon
from impetusctl.client import Client, DaemonUnavailable

CANNOT_START = 78
BAD_CONFIG = "max_connections = [\n"  # not TOML


def _silent_socket(accept: bool) -> tuple[socket.socket, list[socket.socket]]:
    """Listening, like launchd's socket while the daemon fails: with ``accept`` the
    connections are taken and never answered, without it they wait in the backlog."""
    path = short_socket()
    path.parent.mkdir(mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    return listener, []


def _ctl(sock: str, *args: str, bound: str = "1.5", timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = daemon_env(Path("/nonexistent"), Path(sock), IMPETUS_FIRST_REPLY_TIMEOUT=bound)
    cmd = [sys.executable, "-m", "impetusctl", "--no-autostart", "--socket", sock, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("accept", [False, True])
def test_a_socket_nobody_answers_fails_within_the_bound(accept: bool) -> None:
    listener, held = _silent_socket(accept)
    try:
        if accept:
            listener.settimeout(0.1)

            def take() -> None:  # accept and hold, never answering
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    try:
                        held.append(listener.accept()[0])
                    except OSError:
                        pass

            import threading

            threading.Thread(target=take, daemon=True).start()
        started = time.monotonic()
        done = _ctl(listener.getsockname(), "status")
        took = time.monotonic() - started
    finally:
        listener.close()
        for conn in held:
            conn.close()
    assert done.returncode == 1 and took < 1.5 * 1.5 + 5, (took, done.stderr)
    assert "has not answered in 2 s" in done.stderr and "impetusctl doctor" in done.stderr and "impetusctl service logs" in done.stderr


def test_async_client_fails_within_the_bound_on_a_silent_socket() -> None:
    listener, _ = _silent_socket(accept=False)
    try:

        async def main() -> None:
            await AsyncDaemon(listener.getsockname(), first_reply=1.0).call("daemon.health")

        started = time.monotonic()
        with pytest.raises(DaemonUnavailable, match="impetusctl doctor"):
            anyio.run(main)
        assert time.monotonic() - started < 1.5 + 3
    finally:
        listener.close()


def test_a_busy_daemon_is_waited_for_past_the_bound(daemon: DaemonProcess, slow_echo_model: Path) -> None:
    words = " ".join(f"w{i}" for i in range(8))  # 8 tokens at 0.2 s: the answer comes after 1.6 s
    with Client(daemon.socket, first_reply=0.5) as client:
        result = client.call("chat", {"model": str(slow_echo_model), "messages": [{"role": "user", "content": words}]})
    assert result["message"]["content"] == words  # the health probe found the daemon: no false alarm


def _impetusd(root: Path, sock: Path, config: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    if config:
        (home / "config.toml").write_text(config)
    return subprocess.run([sys.executable, "-m", "impetusd"], env=daemon_env(home, sock, **env), capture_output=True, text=True, timeout=60)


def test_a_bad_config_exits_with_the_no_restart_status_and_says_why(tmp_path: Path) -> None:
    done = _impetusd(tmp_path, short_socket(), BAD_CONFIG)
    assert done.returncode == CANNOT_START  # systemd: RestartPreventExitStatus=78
    assert "impetusd: cannot start:" in done.stderr and "config.toml" in done.stderr
    # As the launchd plist runs it: exit 0, which KeepAlive {SuccessfulExit: false} does not restart.
    assert _impetusd(tmp_path, short_socket(), BAD_CONFIG, IMPETUS_CANNOT_START_STATUS="0").returncode == 0


def test_a_bad_backend_table_fails_the_start_naming_its_key(tmp_path: Path) -> None:
    """A backend reads its own ``[backends.<name>]`` table at start: a key it does not know,
    or a bad value, stops the daemon with the key's name (not the first load)."""
    done = _impetusd(tmp_path, short_socket(), '[backends.llamacpp]\nthreads = 2\n')
    assert done.returncode == CANNOT_START
    assert "impetusd: cannot start: config.toml: [backends.llamacpp] has no key 'threads'" in done.stderr, done.stderr
    done = _impetusd(tmp_path / "b", short_socket(), '[backends.llamacpp]\ngpu_layers = "many"\n')
    assert done.returncode == CANNOT_START and "gpu_layers must be a number of layers" in done.stderr, done.stderr


def test_a_socket_path_too_long_exits_with_a_clear_message(tmp_path: Path) -> None:
    sock = short_socket().parent / ("x" * 120) / "d.sock"
    done = _impetusd(tmp_path, sock)
    assert done.returncode == CANNOT_START
    assert "over the 107 a Unix socket path may have here" in done.stderr and "IMPETUS_SOCKET" in done.stderr


def test_another_daemon_on_the_socket_exits_with_the_no_restart_status(daemon: DaemonProcess, tmp_path: Path) -> None:
    done = _impetusd(tmp_path, daemon.socket)
    assert done.returncode == CANNOT_START and "already" in done.stderr


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate is not installed (.ci/run installs it)")
def test_socket_activated_daemon_with_a_bad_config_tells_the_waiting_client(tmp_path: Path) -> None:
    sock = short_socket()
    sock.parent.mkdir(mode=0o700)
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(BAD_CONFIG)
    log = open(tmp_path / "log", "wb")  # noqa: SIM115
    passed = {"IMPETUS_HOME": str(home), "PYTHONPATH": PLUGIN_PATH}
    cmd = ["systemd-socket-activate", "-l", str(sock), *(f"-E{k}={v}" for k, v in passed.items()), sys.executable, "-m", "impetusd"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        done = _ctl(str(sock), "status", bound="20")
        assert proc.wait(30) == CANNOT_START
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert done.returncode == 1
    assert "impetusd cannot start:" in done.stderr and "config.toml" in done.stderr and "[NotReady]" in done.stderr, done.stderr
    assert "told 1 waiting client(s) why" in (tmp_path / "log").read_text()
