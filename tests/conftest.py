from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "plugins"))  # the test plugins, for in-process plugin managers

from helpers import DaemonProcess  # noqa: E402


@pytest.fixture
def daemon(tmp_path_factory: pytest.TempPathFactory):
    """A fresh daemon (with the test echo plugin) for tests that stop or break it."""
    d = DaemonProcess(tmp_path_factory.mktemp("d"), IMPETUS_PLUGINS="impetus_echo").start()
    yield d
    if d.proc and d.proc.poll() is None:
        d.stop()


@pytest.fixture(scope="session")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory):
    """One daemon for the many tests that only talk to it (echo and script test plugins)."""
    d = DaemonProcess(tmp_path_factory.mktemp("s"), IMPETUS_PLUGINS="impetus_echo,impetus_script").start()
    yield d
    d.stop()


@pytest.fixture
def echo_model(tmp_path: Path) -> Path:
    path = tmp_path / "fast.echo"
    path.write_text("0")
    return path


@pytest.fixture
def slow_echo_model(tmp_path: Path) -> Path:
    path = tmp_path / "slow.echo"
    path.write_text("0.2")
    return path


@pytest.fixture(scope="session")
def mlx_shim(shared_daemon: DaemonProcess):
    """An HTTP shim in front of the shared daemon with the bundled model loaded on MLX
    (kept loaded), one for the session: the API tests (OpenAI, Ollama, Anthropic, Responses)."""
    from helpers import ShimProcess

    with shared_daemon.connect() as conn:
        assert "result" in conn.call("models.load", {"model": "smollm2-135m", "backend": "mlx", "keep_alive": -1})
    s = ShimProcess(shared_daemon).start()
    yield s
    assert s.stop() == 0


@pytest.fixture(autouse=True)
def _sigint_stays_default():
    """Whatever a library does to the test process's SIGINT (a server run in-process
    installs its own handler), each test starts with Python's default: the Ctrl-C
    tests' children must see SIGINT as a user's CLI does."""
    import signal

    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
