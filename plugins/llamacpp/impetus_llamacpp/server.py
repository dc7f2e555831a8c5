"""A llama-server child process of the worker, on a Unix socket in a private directory.

The child dies with the worker: on Linux the kernel kills it when the worker exits
(``PR_SET_PDEATHSIG``), so a ``kill -9`` of the worker (or of the daemon, whose death
ends the worker) leaves no llama-server behind; elsewhere and on a normal exit
``close`` kills it. Its stderr is kept (the last lines) for error messages.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from impetusd.plugin_api import InvalidModelFile, PluginError, child_env, die_with

from . import wire
from .binary import Binary

log = logging.getLogger(__name__)

STDERR_LINES = 40
READY_TIMEOUT_S = 600.0  # a large model read from a slow disk


def _start(die_with_worker: Callable[[], None], nice: int) -> Callable[[], None]:
    """In the child before exec: die with the worker, and lower its priority by ``nice``."""

    def child() -> None:
        die_with_worker()
        if nice:
            os.nice(nice)

    return child


class LlamaServer:
    def __init__(self, binary: Binary, model: str, args: list[str], *, role: str, nice: int = 0) -> None:
        self.binary = binary
        self.model = model
        self.role = role
        self.dir = tempfile.mkdtemp(prefix="impetus-llama-")  # 0700: only this user reaches the socket
        self.socket = os.path.join(self.dir, "llama-server.sock")
        self.slot_dir = os.path.join(self.dir, "slots")  # --slot-save-path: staging for slot files (slot_files.py)
        os.mkdir(self.slot_dir, 0o700)
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.closing = False
        cmd = [binary.path, "--model", model, "--host", self.socket, "--no-webui", "--slots", "--slot-save-path", self.slot_dir, *args]
        log.info("starting llama-server (%s): %s", role, " ".join(cmd))
        self.process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_start(die_with(os.getpid()), nice),  # noqa: PLW1509 (the worker starts it from one thread, before serving)
            close_fds=True,
            env=child_env(),  # without the worker's preloaded BLAS
        )
        threading.Thread(target=self._read_stderr, name=f"llama-server-{role}-stderr", daemon=True).start()
        self.http = httpx.Client(transport=httpx.HTTPTransport(uds=self.socket), base_url="http://llama-server", timeout=httpx.Timeout(None, connect=10.0))

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.tail.append(line)
                log.debug("llama-server: %s", line)

    def stderr_tail(self, lines: int = 8) -> str:
        return " | ".join(list(self.tail)[-lines:])

    def exit_status(self) -> str:
        code = self.process.poll()
        if code is None:
            return "running"
        if code < 0:
            try:
                return f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    def stopped(self, wait: float = 0.0) -> bool:
        """Whether the process has exited (waiting up to ``wait`` s for it to)."""
        try:
            self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return False
        return True

    def wait_ready(self) -> None:
        """Until /health answers 200; a server that exits first refused the model."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                time.sleep(0.1)  # the last stderr lines
                reason = self._refusal()
                self.close()
                raise InvalidModelFile(f"{self.model}: llama-server cannot load this GGUF ({reason})", path=self.model)
            try:
                if self.http.get("/health", timeout=5.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.close()
        raise PluginError(f"llama-server did not become ready in {READY_TIMEOUT_S:g} s ({self.stderr_tail()})", backend="llamacpp")

    def _refusal(self) -> str:
        lines = list(self.tail)
        errors = [line for line in lines if "error" in line.lower() or "failed" in line.lower()]
        return f"{self.exit_status()}: " + " | ".join(errors[:6] if errors else lines[-4:])  # the first errors name the cause

    def watch(self, on_exit: Callable[[str], None]) -> None:
        """Call ``on_exit(reason)`` from a thread if the server stops while not being closed."""

        def wait() -> None:
            self.process.wait()
            if not self.closing:
                time.sleep(0.1)  # the last stderr lines
                on_exit(f"llama-server ({self.role}) stopped: {self.exit_status()}; its stderr ended: {self.stderr_tail(6)}")

        threading.Thread(target=wait, name=f"llama-server-{self.role}-watch", daemon=True).start()

    def get(self, path: str) -> Any:
        return self._json(self.http.get(path))

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST ``body`` as JSON on a raw socket (wire.py), the answer's JSON."""
        status, data = wire.post(self.socket, path, body)
        if status != 200:
            raise PluginError(f"llama-server answered {status} to {path}: {data[:500].decode(errors='replace')}", backend="llamacpp")
        return json.loads(data)

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code != 200:
            raise PluginError(f"llama-server answered {response.status_code} to {response.request.url.path}: {response.text[:500]}", backend="llamacpp")
        return response.json()

    def rss(self) -> int:
        import psutil

        try:
            return int(psutil.Process(self.process.pid).memory_info().rss)
        except psutil.Error:
            return 0

    def close(self) -> None:
        self.closing = True
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.http.close()
        shutil.rmtree(self.dir, ignore_errors=True)
