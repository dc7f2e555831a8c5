from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "plugins"))  # the test plugins, for in-process plugin managers

from helpers import DaemonProcess  # noqa: E402

# The files that take longest (from a `--durations` run), given to the xdist workers
# first: with `--dist loadfile` a long file handed out last keeps one worker busy alone at the end.
LONGEST_FIRST = (
    "test_mlx_ranks.py", "test_bench.py", "test_structured.py", "test_batching.py", "test_pull.py",
    "test_responses_api.py", "test_llama_server.py", "test_shim_structured.py", "test_ollama.py", "test_anthropic.py",
    "test_llamacpp.py", "test_cli.py", "test_dashboard.py", "test_prompt_cache.py", "test_nodes.py",
    "test_llama_load_options.py", "test_http.py", "test_embeddings.py", "test_model.py", "test_llama_disk_cache.py",
    "test_residency.py", "test_store.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first, each file's tests in their own order (the sort is stable)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


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
