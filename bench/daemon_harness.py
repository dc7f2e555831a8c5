"""What the resilience benchmarks share: a real daemon on a temporary socket, with
the echo test plugin, and a plain-socket client that times streamed requests."""

from __future__ import annotations

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

import psutil

ROOT = Path(__file__).resolve().parent.parent
ECHO_PLUGINS = ROOT / "tests" / "plugins"


def stop_process(proc: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; waits for the exit."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Daemon:
    """``impetusd`` in the foreground on a temporary socket, logging to a file."""

    def __init__(self, config: str = "", log_level: str = "WARNING", home: Path | None = None) -> None:
        """``home``: a state directory that outlives this daemon (for restarts); the caller removes it."""
        self.root = Path(tempfile.mkdtemp(prefix="impbench-"))
        self.socket = self.root / "run" / "d.sock"
        self.home = home or self.root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        if config:
            (self.home / "config.toml").write_text(config)
        self.log = self.root / "daemon.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMPETUS_")}
        env.update(
            IMPETUS_HOME=str(self.home),
            IMPETUS_SOCKET=str(self.socket),
            IMPETUS_PLUGINS="impetus_echo",
            PYTHONPATH=os.pathsep.join(filter(None, [str(ECHO_PLUGINS), env.get("PYTHONPATH", "")])),
        )
        self.env = env
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Daemon:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "impetusd", "--log-level", self.log_level], env=self.env, stdout=out, stderr=out)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(self.socket))
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"impetusd did not start: {self.log_text()[-2000:]}") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.proc:
            stop_process(self.proc, 30)
        shutil.rmtree(self.root, ignore_errors=True)

    def call(self, method: str, params: Any = None) -> Any:
        """One request on a fresh connection; the result (errors raise)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(str(self.socket))
            conn.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode() + b"\n")
            msg = json.loads(conn.makefile("rb").readline())
        if "error" in msg:
            raise RuntimeError(f"{method} failed: {msg['error']}")
        return msg["result"]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self, pid: int | None = None) -> int:
        return psutil.Process(pid or self.pid).memory_info().rss

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def echo_model(self, delay_s: float = 0.0) -> Path:
        path = self.root / f"echo-{delay_s}.echo"
        path.write_text(str(delay_s))
        return path


class ValidClient:
    """A well-behaved client: streamed ``chat`` requests, timed to the final answer."""

    def __init__(self, sock: Path, model: Path | str, words: int = 16, max_tokens: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(300)
        self.sock.connect(str(sock))
        self.file = self.sock.makefile("rb")
        self.model = str(model)
        self.text = " ".join(f"w{i}" for i in range(words))
        self.max_tokens = max_tokens
        self.next_id = 0

        self.gaps: list[float] = []  # seconds between consecutive chunks of a stream

    def call(self, method: str, params: Any) -> dict[str, Any]:
        self.next_id += 1
        rid = self.next_id
        self.sock.sendall(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}).encode() + b"\n")
        last: float | None = None
        while True:
            line = self.file.readline()
            now = time.perf_counter()
            if not line:
                raise EOFError("the daemon closed the connection")
            msg = json.loads(line)
            if msg.get("method") == "chat.chunk":
                if last is not None:
                    self.gaps.append(now - last)
                last = now
            if msg.get("id") == rid:
                if "error" in msg:
                    raise RuntimeError(f"{method} failed: {msg['error']}")
                return msg["result"]

    def warm_up(self) -> None:
        self.call("models.load", {"model": self.model, "keep_alive": -1})
        self.request()

    def request(self) -> float:
        """One streamed chat; seconds until its final response."""
        params: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": self.text}], "stream": True}
        if self.max_tokens:
            params["max_tokens"] = self.max_tokens
        started = time.perf_counter()
        self.call("chat", params)
        return time.perf_counter() - started

    def close(self) -> None:
        self.file.close()
        self.sock.close()
