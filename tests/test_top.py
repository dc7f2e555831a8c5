"""``impetusctl top``: one frame, a JSON snapshot, and the live view on a pty."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import DaemonProcess, ctrl_c_answers


def ctl(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "impetusctl", "--no-autostart", *args], env=daemon.env, capture_output=True, text=True, timeout=60, check=True)


def test_top_once_and_json(daemon: DaemonProcess, echo_model: Path) -> None:
    with daemon.connect() as conn:
        conn.call("chat", {"model": str(echo_model), "messages": [{"role": "user", "content": "one two"}]})
    frame = ctl(daemon, "top", "--once").stdout
    assert "loaded models" in frame and "recent requests" in frame and "CPU" in frame and "thermal" in frame
    assert "echo" in frame and "stop" in frame  # the backend row and the finished request
    snap = json.loads(ctl(daemon, "--json", "top", "--once").stdout)
    [loaded] = snap["metrics"]["loaded"]
    assert loaded["name"] == str(echo_model.resolve()) and loaded["backend"] == "echo"
    assert snap["metrics"]["recent"][0]["completion_tokens"] == 2
    assert "psutil" in snap["hardware"]["monitors"]


def test_top_refreshes_in_place_on_a_terminal(daemon: DaemonProcess, echo_model: Path) -> None:
    with daemon.connect() as conn:
        conn.call("models.load", {"model": str(echo_model)})
    main, child = pty.openpty()
    env = {**daemon.env, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "impetusctl", "--no-autostart", "top", "--interval", "0.3"],
        env=env,
        stdin=child,
        stdout=child,
        stderr=child,
        preexec_fn=ctrl_c_answers,
    )
    os.close(child)
    out = b""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and out.count(b"loaded models") < 3:
        ready, _, _ = select.select([main], [], [], 0.5)
        if ready:
            try:
                out += os.read(main, 65536)
            except OSError:
                break
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0
    os.close(main)
    assert out.count(b"loaded models") >= 3  # redrawn, not printed once
    assert b"\x1b[1A" in out or b"\x1b[2K" in out  # the cursor goes back up to redraw in place
