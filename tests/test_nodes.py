"""Compute nodes (issue 19), on loopback only: real ``rpc-server`` processes (built by
scripts/setup next to llama-server), ``impetusctl node serve`` supervising one, the node
list through the CLI and the daemon, and the bundled SmolLM2-135M split across two nodes
by a real daemon: the same greedy answer as on this machine alone, the nodes shown in
``models.loaded``, a node killed mid-stream failing the request with ``NodeLost`` within
5 s and the next request served without it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import DaemonProcess, daemon_env, wait_until

from impetus_llamacpp.nodes import Node, probe

MODEL = "smollm2-135m"
PROMPT = "The capital of France is"
# llama-server and rpc-server: the environment's (scripts/setup), unless named
LIBEXEC = Path(sys.prefix) / "libexec" / "impetus"
LLAMA_SERVER = os.environ.get("IMPETUS_LLAMA_SERVER") or str(LIBEXEC / "llama-server")
RPC_SERVER = os.environ.get("IMPETUS_RPC_SERVER") or str(Path(LLAMA_SERVER).parent / "rpc-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ctl(d: DaemonProcess | None, *args: str, home: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    if d is not None:
        env = dict(d.env)
        args = ("--socket", str(d.socket), "--no-autostart", *args)
    else:
        assert home is not None
        env = daemon_env(home, home / "none.sock", IMPETUS_RPC_SERVER=RPC_SERVER)
    return subprocess.run([sys.executable, "-m", "impetusctl", *args], env=env, capture_output=True, text=True, timeout=timeout)


def start_node(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([RPC_SERVER, "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_until(lambda: probe(Node("n", "127.0.0.1", port)).state == "ready", timeout=20), f"rpc-server on {port} did not answer"
    return proc


@pytest.fixture(scope="module")
def rpc_binary() -> None:
    assert os.access(RPC_SERVER, os.X_OK), f"no rpc-server at {RPC_SERVER}: run scripts/setup (it builds it with llama-server)"


@pytest.fixture(scope="module")
def binaries(rpc_binary: None) -> None:
    # a llama-server built without RPC lists --rpc too; a load then says NoBackend "built without RPC: run scripts/setup"
    assert os.access(LLAMA_SERVER, os.X_OK), f"no llama-server at {LLAMA_SERVER}: run scripts/setup"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, rpc_binary: None) -> Iterator[DaemonProcess]:
    d = DaemonProcess(tmp_path_factory.mktemp("nodes"), IMPETUS_LLAMA_SERVER=LLAMA_SERVER).start()
    yield d
    d.stop()


@pytest.fixture
def nodes(rpc_binary: None) -> Iterator[list[tuple[int, subprocess.Popen[bytes]]]]:
    started = []
    for _ in range(2):
        port = free_port()
        started.append((port, start_node(port)))
    yield started
    for _, proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def call(d: DaemonProcess, method: str, params: Any = None) -> dict[str, Any]:
    with d.connect() as conn:
        return conn.call(method, params)


def complete(d: DaemonProcess, max_tokens: int = 12) -> dict[str, Any]:
    reply = call(d, "complete", {"model": MODEL, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0.0})
    assert "result" in reply, reply
    return reply["result"]


def test_node_serve_refuses_a_non_loopback_address_without_the_flag(tmp_path: Path, rpc_binary: None) -> None:
    done = ctl(None, "node", "serve", "--host", "0.0.0.0", "--port", str(free_port()), home=tmp_path)
    assert done.returncode == 2, done
    assert "--allow-remote" in done.stderr and "authentication" in done.stderr


def test_node_serve_with_the_flag_warns_and_listens(tmp_path: Path, rpc_binary: None) -> None:
    port = free_port()
    env = daemon_env(tmp_path, tmp_path / "none.sock", IMPETUS_RPC_SERVER=RPC_SERVER)
    proc = subprocess.Popen(
        [sys.executable, "-m", "impetusctl", "node", "serve", "--host", "0.0.0.0", "--port", str(port), "--allow-remote"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_until(lambda: probe(Node("n", "127.0.0.1", port)).state == "ready", timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert "WARNING" in err.decode() and "no authentication" in err.decode()
    assert proc.returncode == 0


def test_node_serve_restarts_its_rpc_server_and_stops_cleanly(tmp_path: Path, rpc_binary: None) -> None:
    port = free_port()
    env = daemon_env(tmp_path, tmp_path / "none.sock", IMPETUS_RPC_SERVER=RPC_SERVER)
    proc = subprocess.Popen([sys.executable, "-m", "impetusctl", "node", "serve", "--port", str(port)], env=env, stderr=subprocess.DEVNULL)
    try:
        node = Node("n", "127.0.0.1", port)
        assert wait_until(lambda: probe(node).state == "ready", timeout=20)
        [child] = psutil.Process(proc.pid).children()
        child.kill()
        assert wait_until(lambda: [c.pid for c in psutil.Process(proc.pid).children()] not in ([], [child.pid]), timeout=10)
        assert wait_until(lambda: probe(node).state == "ready", timeout=20), "the node did not come back"
        [again] = psutil.Process(proc.pid).children()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0
    assert not psutil.pid_exists(again.pid) or psutil.Process(again.pid).status() == psutil.STATUS_ZOMBIE
    log = (tmp_path / "logs" / f"node-{port}.log").read_text()
    assert "restarting" in log and "Starting RPC server" in log


def test_node_add_ls_rm_through_the_cli(daemon: DaemonProcess, nodes: list[tuple[int, subprocess.Popen[bytes]]]) -> None:
    (port, _), _ = nodes
    added = ctl(daemon, "node", "add", "alpha", f"127.0.0.1:{port}")
    assert added.returncode == 0, added.stderr
    assert "alpha" in added.stdout and "ready" in added.stdout
    gone = ctl(daemon, "node", "add", "beta", "127.0.0.1:1")
    assert gone.returncode == 0, gone.stderr
    listed = json.loads(ctl(daemon, "--json", "node", "ls").stdout)["nodes"]
    by_name = {n["name"]: n for n in listed}
    assert by_name["alpha"]["state"] == "ready" and by_name["alpha"]["free_bytes"] > 0 and by_name["alpha"]["latency_ms"] is not None
    assert by_name["beta"]["state"] == "unreachable" and "refused" in by_name["beta"]["error"]
    assert {n["name"] for n in json.loads((daemon.home / "nodes.json").read_text())} == {"alpha", "beta"}  # kept across restarts
    health = call(daemon, "daemon.health")["result"]
    assert {n["name"] for n in health["nodes"]} == {"alpha", "beta"}
    status = ctl(daemon, "status").stdout
    assert f"alpha 127.0.0.1:{port} ready" in status and "beta 127.0.0.1:1 unreachable" in status
    bad = ctl(daemon, "node", "add", "gamma", "no-port-here")
    assert bad.returncode == 1 and "InvalidParams" in bad.stderr
    for name in ("alpha", "beta"):
        assert ctl(daemon, "node", "rm", name).returncode == 0
    assert json.loads(ctl(daemon, "--json", "node", "ls").stdout)["nodes"] == []
    missing = ctl(daemon, "node", "rm", "alpha")
    assert missing.returncode == 1 and "no node named" in missing.stderr


@pytest.mark.model
def test_split_across_two_nodes_gives_the_single_machine_answer(daemon: DaemonProcess, binaries: None, nodes: list[tuple[int, subprocess.Popen[bytes]]]) -> None:
    (pa, _), (pb, _) = nodes
    assert "result" in call(daemon, "models.load", {"model": MODEL, "keep_alive": -1, "nodes": []})
    alone = complete(daemon)
    assert alone["timings"].get("nodes") is None
    loaded = call(daemon, "models.load", {"model": MODEL, "keep_alive": -1, "nodes": [f"127.0.0.1:{pa}", f"127.0.0.1:{pb}"]})
    assert "result" in loaded, loaded
    model = loaded["result"]["model"]
    shares = {s["name"]: s for s in model["nodes"]}
    assert set(shares) == {"local", f"127.0.0.1:{pa}", f"127.0.0.1:{pb}"}
    assert all(shares[n]["bytes"] > 0 for n in shares if n != "local")
    assert model["engine"]["rpc_nodes"] == [f"127.0.0.1:{pa}", f"127.0.0.1:{pb}"]
    split = complete(daemon)
    assert split["text"] == alone["text"]
    assert split["timings"]["nodes"] == [f"127.0.0.1:{pa}", f"127.0.0.1:{pb}"]
    shown = call(daemon, "models.loaded")["result"]["models"][0]
    assert [s["name"] for s in shown["nodes"]] == ["local", f"127.0.0.1:{pa}", f"127.0.0.1:{pb}"]
    call(daemon, "models.unload", {"model": MODEL})


@pytest.mark.model
def test_a_node_killed_mid_stream_is_node_lost_and_the_next_request_recovers(
    daemon: DaemonProcess, binaries: None, nodes: list[tuple[int, subprocess.Popen[bytes]]]
) -> None:
    (pa, _), (pb, node_b) = nodes
    loaded = call(daemon, "models.load", {"model": MODEL, "keep_alive": -1, "nodes": [f"127.0.0.1:{pa}", f"127.0.0.1:{pb}"]})
    assert "result" in loaded, loaded
    with daemon.connect() as conn:
        rid = conn.send("complete", {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 400, "temperature": 0.0, "stream": True})
        first = conn.read()
        assert first.get("method") == "complete.chunk" or first.get("method", "").endswith("chunk"), first
        killed = time.monotonic()
        node_b.kill()
        _, reply = conn.until_response(rid)
        took = time.monotonic() - killed
    assert "error" in reply, reply
    error = reply["error"]
    assert error["data"]["name"] == "NodeLost", error
    assert f"127.0.0.1:{pb}" in error["data"]["node"]
    assert took < 5.0, took
    again = complete(daemon, max_tokens=4)  # reloaded without the lost node
    assert again["timings"]["nodes"] == [f"127.0.0.1:{pa}"]
    shown = call(daemon, "models.loaded")["result"]["models"][0]
    assert any(f"127.0.0.1:{pb}" in d for d in shown["nodes_dropped"])
    call(daemon, "models.unload", {"model": MODEL})


def test_a_load_that_fits_no_node_is_insufficient_memory_naming_each_part(daemon: DaemonProcess, nodes: list[tuple[int, subprocess.Popen[bytes]]]) -> None:
    (port, _), _ = nodes
    assert ctl(daemon, "node", "add", "tiny", f"127.0.0.1:{port}", "--memory", "1000").returncode == 0
    try:
        refused = call(daemon, "models.load", {"model": MODEL, "nodes": ["tiny"]})
    finally:
        ctl(daemon, "node", "rm", "tiny")
    error = refused["error"]
    assert error["data"]["name"] == "InsufficientMemory", error
    assert error["data"]["parts"] == {"tiny": 1000} and "tiny 1000 B" in error["message"]
    assert MODEL not in [m["name"] for m in call(daemon, "models.loaded")["result"]["models"]]


def test_nodes_on_the_mlx_backend_are_refused_by_name(daemon: DaemonProcess) -> None:
    """MLX splits a model across processes on this machine (``ranks``, tests/test_mlx_ranks.py), not across nodes."""
    refused = call(daemon, "models.load", {"model": MODEL, "backend": "mlx", "nodes": ["127.0.0.1:1"]})
    error = refused["error"]
    assert error["data"]["name"] == "NoBackend" and error["data"]["reason"] == "no-nodes", error
    assert "(ranks)" in error["message"], error


@pytest.mark.model
def test_a_load_whose_nodes_are_all_gone_runs_here_and_says_so(daemon: DaemonProcess) -> None:
    gone = f"127.0.0.1:{free_port()}"
    loaded = call(daemon, "models.load", {"model": MODEL, "keep_alive": -1, "nodes": [gone]})
    assert "result" in loaded, loaded
    model = loaded["result"]["model"]
    assert [s["name"] for s in model["nodes"]] == ["local"] and model["nodes"][0]["bytes"] == model["estimate"]["total_bytes"]
    assert gone in model["nodes_dropped"][0] and "unreachable" in model["nodes_dropped"][0]
    assert "rpc_nodes" not in model["engine"]
    done = complete(daemon, max_tokens=2)
    assert done["timings"].get("nodes") is None
    call(daemon, "models.unload", {"model": MODEL})


def test_a_llama_server_built_without_rpc_is_no_backend(tmp_path: Path, nodes: list[tuple[int, subprocess.Popen[bytes]]]) -> None:
    """llama-server lists --rpc in its help whether or not it was built with RPC, and
    exits on it when not: a build without RPC (made before scripts/setup added it)."""
    (port, _), _ = nodes
    fake = tmp_path / "llama-server"
    options = " ".join(("--kv-unified", "--no-context-shift", "--cache-ram", "--no-webui", "--pooling", "--embedding", "--slots", "--rpc"))
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in --version) echo "version: 1 (norpc)"; exit 0;; --help) echo "' + options + '"; exit 0;; esac\n'
        'echo "error while handling argument \\"--rpc\\": RPC not supported in this build" >&2; exit 1\n'
    )
    fake.chmod(0o755)
    (tmp_path / "d").mkdir()
    d = DaemonProcess(tmp_path / "d", IMPETUS_LLAMA_SERVER=str(fake)).start()
    try:
        refused = call(d, "models.load", {"model": MODEL, "nodes": [f"127.0.0.1:{port}"]})
    finally:
        d.stop()
    error = refused["error"]
    assert error["data"]["name"] == "NoBackend" and "built without RPC" in error["message"], error


@pytest.mark.model
def test_a_node_that_stalls_mid_stream_is_node_lost_within_5_s(daemon: DaemonProcess, binaries: None, nodes: list[tuple[int, subprocess.Popen[bytes]]]) -> None:
    (pa, _), (pb, node_b) = nodes
    loaded = call(daemon, "models.load", {"model": MODEL, "keep_alive": -1, "nodes": [f"127.0.0.1:{pa}", f"127.0.0.1:{pb}"]})
    assert "result" in loaded, loaded
    try:
        with daemon.connect() as conn:
            rid = conn.send("complete", {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 400, "temperature": 0.0, "stream": True})
            conn.read()
            stalled = time.monotonic()
            node_b.send_signal(signal.SIGSTOP)  # alive, connected, silent
            _, reply = conn.until_response(rid)
            took = time.monotonic() - stalled
        assert reply["error"]["data"]["name"] == "NodeLost", reply
        assert took < 5.0, took
        again = complete(daemon, max_tokens=4)  # the silent node is left out at the reload
        assert again["timings"]["nodes"] == [f"127.0.0.1:{pa}"]
    finally:
        node_b.send_signal(signal.SIGCONT)
    call(daemon, "models.unload", {"model": MODEL})


@pytest.mark.model
def test_two_models_share_a_node_of_two_clients_and_the_second_gets_what_the_first_left(
    daemon: DaemonProcess, binaries: None, tmp_path: Path
) -> None:
    """An rpc-server serves one client at a time (ggml-rpc's accept loop); ``node serve
    --clients 2`` runs two, so two models can be split across one node; the second's
    part counts what the first holds there against the node's cap."""
    from impetusd.store.catalog import CATALOG

    bundled = CATALOG[MODEL].local_path()
    assert bundled is not None
    second = tmp_path / "second.gguf"
    second.symlink_to(bundled)
    port = free_port()
    env = daemon_env(tmp_path, tmp_path / "none.sock", IMPETUS_RPC_SERVER=RPC_SERVER)
    serve = [sys.executable, "-m", "impetusctl", "node", "serve", "--port", str(port), "--clients", "2"]
    proc = subprocess.Popen(serve, env=env, stderr=subprocess.DEVNULL)
    try:
        for p in (port, port + 1):
            assert wait_until(lambda p=p: probe(Node("n", "127.0.0.1", p)).state == "ready", timeout=20), f"port {p}"
        assert ctl(daemon, "node", "add", "shared", f"127.0.0.1:{port}", "--clients", "2").returncode == 0
        first = call(daemon, "models.load", {"model": MODEL, "keep_alive": -1, "nodes": ["shared"]})
        assert "result" in first, first
        held = {s["name"]: s["bytes"] for s in first["result"]["model"]["nodes"]}["shared"]
        assert first["result"]["model"]["engine"]["rpc_nodes"] == [f"127.0.0.1:{port}"]
        # the cap leaves half of what the first holds for the second
        assert ctl(daemon, "node", "add", "shared", f"127.0.0.1:{port}", "--clients", "2", "--memory", str(held * 3 // 2)).returncode == 0
        loaded = call(daemon, "models.load", {"model": str(second), "keep_alive": -1, "nodes": ["shared"]})
        assert "result" in loaded, loaded
        model = loaded["result"]["model"]
        assert model["engine"]["rpc_nodes"] == [f"127.0.0.1:{port + 1}"] and model["nodes_dropped"] == []
        part = {s["name"]: s["bytes"] for s in model["nodes"]}["shared"]
        assert 0 < part <= held * 3 // 2 - held, (part, held)
        both = [complete(daemon)["text"], call(daemon, "complete", {"model": model["name"], "prompt": PROMPT, "max_tokens": 12, "temperature": 0.0})]
        assert both[1]["result"]["text"] == both[0], both  # both answer, each from its own rpc-server
        [shared] = [n for n in call(daemon, "nodes.list")["result"]["nodes"] if n["name"] == "shared"]
        assert shared["state"] == "busy" and set(shared["used_by"]) == {MODEL, model["name"]} and shared["held_bytes"] == held + part
        assert MODEL in shared["error"] and "--clients" in shared["error"]
        # the same rpc-server added as a one-client node: busy, naming the model on it
        assert ctl(daemon, "node", "add", "solo", f"127.0.0.1:{port}").returncode == 0
        [solo] = [n for n in call(daemon, "nodes.list")["result"]["nodes"] if n["name"] == "solo"]
        assert solo["state"] == "busy" and solo["used_by"] == [MODEL] and f"serving {MODEL}" in solo["error"]
    finally:
        for name in (MODEL, str(second)):
            call(daemon, "models.unload", {"model": name})
        for name in ("shared", "solo"):
            ctl(daemon, "node", "rm", name)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0
