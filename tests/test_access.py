"""Access control: another user's connection is refused by the peer-uid check itself.

The daemon keeps its socket 0600 in a 0700 directory, which already stops other
users at the file system. To test the uid check on its own, the test loosens
those modes after the daemon has started (as a careless admin might) and then
connects as ``nobody``: the connection must still be closed without an answer.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import DaemonProcess

CLIENT = r"""
import json, socket, sys
out = {"uid": __import__("os").getuid()}
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    out["connect"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out)); sys.exit()
out["connect"] = "ok"
try:
    s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"daemon.info"}\n')
except OSError as exc:
    out["send"] = type(exc).__name__
data = b""
try:
    while chunk := s.recv(65536):
        data += chunk
except OSError as exc:
    out["recv"] = type(exc).__name__
out["received"] = data.decode("utf-8", "replace")
print(json.dumps(out))
"""


def _run_client(python: str, sock: Path, user: str | None) -> dict:
    kwargs = {"user": user} if user else {}
    done = subprocess.run([python, "-I", "-S", "-c", CLIENT, str(sock)], capture_output=True, text=True, timeout=30, **kwargs)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _python_for(user: str) -> str | None:
    """A Python interpreter ``user`` may run (ours may live under root's home)."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3", path="/usr/bin:/bin")):
        if not candidate or not Path(candidate).exists():
            continue
        try:
            ok = subprocess.run([candidate, "-I", "-S", "-c", "pass"], user=user, capture_output=True, timeout=30).returncode == 0
        except OSError:
            ok = False
        if ok:
            return candidate
    return None


@pytest.fixture
def nobody_python() -> str:
    if os.getuid() != 0:
        pytest.skip("needs root to run a client as another user (nobody)")
    try:
        import pwd

        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("this machine has no user 'nobody'")
    python = _python_for("nobody")
    if python is None:
        pytest.skip("no Python interpreter that user nobody may run")
    return python


@pytest.fixture
def open_daemon():
    root = Path(tempfile.mkdtemp(prefix="impetus-uid-", dir="/tmp"))  # outside pytest's 0700 tree
    d = DaemonProcess(root, IMPETUS_PLUGINS="impetus_echo").start()
    yield d
    d.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_another_users_connection_is_refused_before_anything_is_read(open_daemon: DaemonProcess, nobody_python: str) -> None:
    d = open_daemon
    # The daemon made these private; loosen them so only the uid check stands in the way.
    assert stat.S_IMODE(d.socket.parent.stat().st_mode) == 0o700
    os.chmod(d.socket.parent.parent, 0o711)  # the short directory helpers.short_socket made
    os.chmod(d.socket.parent, 0o711)
    os.chmod(d.socket, 0o666)
    mine = _run_client(nobody_python, d.socket, None)
    assert mine["connect"] == "ok" and json.loads(mine["received"].splitlines()[0])["result"]["pid"] == d.pid
    theirs = _run_client(nobody_python, d.socket, "nobody")
    assert theirs["uid"] != os.getuid()
    assert theirs["connect"] == "ok"  # the file system let it through...
    assert theirs["received"] == ""  # ...the daemon answered nothing and closed
    assert theirs.get("recv") in (None, "ConnectionResetError"), theirs
    log = d.log.read_text()
    assert f"refused a connection from uid {theirs['uid']}" in log
    with d.connect() as conn:  # still serving its own user
        health = conn.call("daemon.health")["result"]
        assert health["status"] == "ok" and health["connections"] == 1


def test_loose_socket_directory_is_tightened_at_start(tmp_path_factory: pytest.TempPathFactory) -> None:
    d = DaemonProcess(tmp_path_factory.mktemp("modes"))
    d.socket.parent.mkdir(parents=True, mode=0o755)
    os.chmod(d.socket.parent, 0o755)
    d.start()
    try:
        assert stat.S_IMODE(d.socket.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(d.socket.stat().st_mode) == 0o600
    finally:
        assert d.stop() == 0
