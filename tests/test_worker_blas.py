"""Workers get OpenBLAS preloaded when it is installed (``worker_blas = "auto"``),
not with ``"off"``, and start normally when the configured library is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import DaemonProcess, maps_mention
from impetusd.workers.blas import find_openblas


def _worker_pid(d: DaemonProcess, model: Path) -> int:
    with d.connect() as conn:
        pid = conn.call("models.load", {"model": str(model)})["result"]["model"]["pid"]
        reply = conn.call("chat", {"model": str(model), "messages": [{"role": "user", "content": "still works"}]})
        assert reply["result"]["message"]["content"] == "still works"
    return pid


@pytest.mark.parametrize("setting", ["auto", "off", "/nonexistent/libopenblas.so.0"])
def test_worker_blas_setting(tmp_path: Path, echo_model: Path, setting: str) -> None:
    if setting == "auto" and find_openblas() is None:
        pytest.skip("OpenBLAS is not installed here (apt-get install libopenblas0-pthread)")
    d = DaemonProcess(tmp_path, config=f'worker_blas = "{setting}"\n', IMPETUS_PLUGINS="impetus_echo").start()
    try:
        pid = _worker_pid(d, echo_model)
        assert maps_mention(pid, "libopenblas") == (setting == "auto")
    finally:
        d.stop()
    if setting.startswith("/"):
        assert "does not exist; workers start without it" in d.log.read_text()
