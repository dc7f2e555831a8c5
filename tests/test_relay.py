"""The relay (docs/design.md, "Relay"): a llama.cpp worker hands each stream's socket to
the daemon, which reads llama-server's tokens itself. Shown from outside: with the worker
stopped (SIGSTOP) mid-answer, tokens keep reaching the client through the daemon; with
the default (the worker reads and passes each token on) they stop with it. The relay is
opt-in (``IMPETUS_RELAY=1``): measured, it gained nothing (docs/design.md)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import DaemonProcess

MODEL = "smollm2-135m"
STOPPED_S = 2.0


@pytest.mark.model
@pytest.mark.parametrize("relay", [True, False], ids=["relay", "worker-reads"])
def test_tokens_skip_a_stopped_worker_only_through_the_relay(tmp_path: Path, relay: bool) -> None:
    env = {"IMPETUS_RELAY": "1"} if relay else {}
    d = DaemonProcess(tmp_path, **env).start()
    try:
        with d.connect() as conn:
            loaded = conn.call("models.load", {"model": MODEL, "keep_alive": -1})
            worker = psutil.Process(loaded["result"]["model"]["pid"])
            params = {"model": MODEL, "messages": [{"role": "user", "content": "Count from one to fifty in words."}], "max_tokens": 120, "temperature": 0}
            plain = conn.call("chat", params)["result"]
            rid = conn.send("chat", {**params, "stream": True})
            got: list[tuple[float, dict[str, Any]]] = []

            def read_all() -> None:
                while True:
                    msg = conn.read()
                    got.append((time.monotonic(), msg))
                    if msg.get("id") == rid:
                        return

            reader = threading.Thread(target=read_all, daemon=True)
            reader.start()
            deadline = time.monotonic() + 60
            while not got and time.monotonic() < deadline:
                time.sleep(0.01)
            assert got, "no first token"
            worker.suspend()
            stopped_at = time.monotonic()
            try:
                time.sleep(STOPPED_S)
            finally:
                worker.resume()
            resumed_at = time.monotonic()
            reader.join(timeout=120)
    finally:
        d.stop()
    while_stopped = [m for t, m in got if stopped_at + 0.2 < t < resumed_at and "id" not in m]
    if relay:
        assert len(while_stopped) >= 10, f"{len(while_stopped)} tokens while the worker was stopped"
    else:
        assert while_stopped == []
    final = got[-1][1]["result"]
    deltas = "".join(m["params"].get("delta", "") for _, m in got if "id" not in m)
    assert deltas == final["message"]["content"] == plain["message"]["content"]
    assert final["usage"]["completion_tokens"] == plain["usage"]["completion_tokens"]
