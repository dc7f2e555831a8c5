"""Start real daemons on real sockets, and talk raw JSON-RPC to them."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).parent
PLUGIN_PATH = str(TESTS / "plugins")
REFERENCE_PYTHON = TESTS.parent / ".venv-reference" / "bin" / "python"


def reference_python() -> Path:
    """The Python of .venv-reference (torch, sentence-transformers): reference results for the tests."""
    if not REFERENCE_PYTHON.exists():
        import pytest

        pytest.fail(f"{REFERENCE_PYTHON.parent.parent} (torch, sentence-transformers) is missing: run scripts/setup --tests", pytrace=False)
    return REFERENCE_PYTHON


SHORT_ROOT = "/tmp"  # short on every platform (macOS's TMPDIR is ~50 bytes before pytest adds its own)
SUN_PATH_MAX = 104 if sys.platform == "darwin" else 108  # sizeof(sockaddr_un.sun_path), the NUL included


def short_socket(name: str = "d.sock") -> Path:
    """A socket path well inside ``sun_path`` wherever pytest's tmp_path is: a fresh
    short directory (removed when the tests end) holding a not-yet-made ``run/``
    directory, which the daemon creates 0700 as it does its own."""
    root = tempfile.mkdtemp(prefix="imp", dir=SHORT_ROOT)
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    path = Path(root) / "run" / name
    assert len(os.fsencode(path)) < SUN_PATH_MAX, path
    return path


def daemon_env(home: Path, sock: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPETUS_")}
    env.update(IMPETUS_HOME=str(home), IMPETUS_SOCKET=str(sock), PYTHONPATH=os.pathsep.join(filter(None, [PLUGIN_PATH, env.get("PYTHONPATH", "")])))
    env.update(extra)
    return env


class DaemonProcess:
    """``impetusd`` as a user runs it: a foreground process on a socket."""

    def __init__(self, root: Path, config: str = "", **env: str) -> None:
        self.root = root
        self.home = root / "home"
        self.socket = short_socket()  # not under root: pytest's tmp paths are too long for sun_path on macOS
        self.env = daemon_env(self.home, self.socket, **env)
        self.log = root / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        if config:  # config.toml lines, e.g. "hung_timeout_s = 1"
            self.home.mkdir(parents=True, exist_ok=True)
            (self.home / "config.toml").write_text(config)

    def start(self, timeout: float = 20.0) -> DaemonProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "impetusd", "--log-level", "DEBUG"], env=self.env, stdout=out, stderr=out
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"impetusd exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with RawConnection(self.socket) as conn:
                    if "result" in conn.call("daemon.health"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"impetusd did not start: {self.log.read_text()[-2000:]}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def connect(self) -> RawConnection:
        return RawConnection(self.socket)


class RawConnection:
    """NDJSON JSON-RPC on a plain socket: what any local program would do."""

    def __init__(self, path: Path, timeout: float = 120.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rb")
        self.next_id = 0

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def send_line(self, data: bytes) -> None:
        self.sock.sendall(data + b"\n")

    def send(self, method: str, params: Any = None, notify: bool = False) -> int | None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        if notify:
            self.send_line(json.dumps(msg).encode())
            return None
        self.next_id += 1
        msg["id"] = self.next_id
        self.send_line(json.dumps(msg).encode())
        return self.next_id

    def read(self) -> Any:
        line = self.file.readline()
        if not line:
            raise EOFError("connection closed")
        return json.loads(line)

    def call(self, method: str, params: Any = None) -> dict[str, Any]:
        rid = self.send(method, params)
        return self.until_response(rid)[1]

    def read_or_call(self, method: str) -> dict[str, Any]:
        """``call``, but an error line the daemon sends unasked (a refusal) is returned too."""
        rid = self.send(method)
        msg = self.read()
        while msg.get("id") not in (rid, None):
            msg = self.read()
        return msg

    def until_response(self, rid: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        notes = []
        while True:
            msg = self.read()
            if "id" in msg and msg.get("id") == rid and ("result" in msg or "error" in msg):
                return notes, msg
            notes.append(msg)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def maps_mention(pid: int, needle: str) -> bool:
    with open(f"/proc/{pid}/maps") as fh:
        return any(needle in line for line in fh)


class ShimProcess:
    """``impetusctl http`` as a user runs it, on a free port, in front of a daemon."""

    def __init__(self, daemon: DaemonProcess, *args: str) -> None:
        self.daemon = daemon
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0

    def start(self, timeout: float = 30.0) -> ShimProcess:
        cmd = [sys.executable, "-m", "impetusctl", "--json", "--no-autostart", "http", "--port", "0", *self.args]
        self.proc = subprocess.Popen(cmd, env=self.daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"impetusctl http exited: {self.proc.stderr.read().decode()[-2000:] if self.proc.stderr else ''}")
        ready = json.loads(line)
        self.url, self.port = ready["url"], ready["port"]
        self.base = self.url.removesuffix("/v1")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # the line is printed just before uvicorn starts accepting
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("the shim did not start accepting connections")

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def ctrl_c_answers() -> None:
    """``preexec_fn`` for a CLI a test will Ctrl-C: SIGINT back to its default in the
    child. A shell that starts the test run in the background ignores SIGINT, every
    child inherits that, and a Python started with SIGINT ignored never raises
    KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
