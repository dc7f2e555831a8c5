"""The llama.cpp backend's llama-server child, through a real daemon, real workers, the
real llama-server binary and the bundled SmolLM2-135M (GGUF): concurrent streams through
its slots, cancellation reaching the slot, its death reported as the worker's crash,
no orphan after a ``kill -9``, and its refusals typed."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from gguf_factory import write_tiny_llama
from helpers import DaemonProcess, pid_alive, wait_until
from impetus_llamacpp.engine import YIELD_NICE, takes_every_core
from impetus_llamacpp.vocab import LIBRARY

MODEL = "smollm2-135m"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    d = DaemonProcess(tmp_path_factory.mktemp("llama-server")).start()
    yield d
    d.stop()


def load(d: DaemonProcess, name: str = MODEL) -> dict[str, Any]:
    with d.connect() as conn:
        loaded = conn.call("models.load", {"model": name, "keep_alive": -1})
    assert "result" in loaded, loaded
    model = loaded["result"]["model"]
    assert model["backend"] == "llamacpp"
    return model


def llama_servers(worker_pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(worker_pid).children() if p.name() == "llama-server"]


def slots(server: psutil.Process) -> list[dict[str, Any]]:
    """llama-server's own view of its slots, over its Unix socket."""
    cmd = server.cmdline()
    sock = cmd[cmd.index("--host") + 1]
    with httpx.Client(transport=httpx.HTTPTransport(uds=sock), base_url="http://llama-server", timeout=30) as http:
        return http.get("/slots").json()


def decoded(server: psutil.Process) -> list[int]:
    return [int(s.get("next_token", [{}])[0].get("n_decoded", 0)) if isinstance(s.get("next_token"), list) else 0 for s in slots(server)]


@pytest.mark.model
def test_the_worker_runs_llama_server_on_a_private_socket(daemon: DaemonProcess) -> None:
    model = load(daemon)
    [server] = llama_servers(model["pid"])
    cmd = server.cmdline()
    sock = Path(cmd[cmd.index("--host") + 1])
    assert sock.name.endswith(".sock") and sock.exists()
    assert oct(sock.parent.stat().st_mode & 0o777) == "0o700"
    assert "--port" not in cmd and not [c for c in server.net_connections(kind="inet")]  # no TCP
    assert cmd[cmd.index("--parallel") + 1] == "4" and "--no-context-shift" in cmd
    with daemon.connect() as conn:
        info = conn.call("models.loaded")["result"]["models"][0]
        counted = conn.call("hardware.snapshot")["result"]["workers"][MODEL]
    assert info["engine"]["llama_server_pid"] == server.pid
    # Threads on every core: no polling, and llama-server yields to its worker and the daemon.
    every_core = takes_every_core(int(info["engine"]["threads"]))
    assert ("--poll" in cmd and cmd[cmd.index("--poll") + 1] == "0") == every_core
    assert server.nice() - psutil.Process(model["pid"]).nice() == (YIELD_NICE if every_core else 0)
    built_beside = (Path(cmd[0]).parent / LIBRARY).is_file()  # scripts/setup's CPU build on Linux
    assert info["engine"]["tokenizer"] == ("in-process (libimpetus-vocab)" if built_beside else "llama-server /tokenize")
    # The worker's memory, as the daemon counts it, includes its llama-server's (the model's weights and KV cache).
    worker_alone = psutil.Process(model["pid"]).memory_info().rss
    assert counted > worker_alone + server.memory_info().rss // 2


@pytest.mark.model
def test_four_concurrent_streams_match_each_alone(daemon: DaemonProcess) -> None:
    load(daemon)
    questions = ["Name a colour.", "Name a fruit.", "Which city is the capital of France?", "Count to five."]

    def ask(q: str, out: dict[str, Any]) -> None:
        with daemon.connect() as conn:
            rid = conn.send("chat", {"model": MODEL, "messages": [{"role": "user", "content": q}], "max_tokens": 8, "temperature": 0, "stream": True})
            _, final = conn.until_response(rid)
        out[q] = final["result"]

    # Each alone first (twice: the second run's prompt comes from the slot cache, as the
    # concurrent runs' do). Batched decoding changes float summation order, so after a few
    # dozen tokens greedy text may part; the first 8 tokens are the same.
    alone: dict[str, Any] = {}
    for q in questions * 2:
        ask(q, alone)
    together: dict[str, Any] = {}
    threads = [threading.Thread(target=ask, args=(q, together)) for q in questions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for q in questions:
        assert together[q]["message"]["content"] == alone[q]["message"]["content"], q
        assert together[q]["usage"] == {**alone[q]["usage"], "cached_tokens": together[q]["usage"]["cached_tokens"]}
    assert max(r["timings"].get("batch_size") or 1 for r in together.values()) > 1  # they did run together


@pytest.mark.model
def test_cancel_stops_the_slot_decoding(daemon: DaemonProcess) -> None:
    model = load(daemon)
    [server] = llama_servers(model["pid"])
    with daemon.connect() as conn:
        rid = conn.send("chat", {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 4000, "stream": True})
        conn.read()
        conn.read()
        assert any(s["is_processing"] for s in slots(server))
        conn.send("$/cancel", {"id": rid}, notify=True)
        _, final = conn.until_response(rid)
    assert final["result"]["finish_reason"] == "cancelled"
    assert wait_until(lambda: not any(s["is_processing"] for s in slots(server)), timeout=10)
    before = decoded(server)
    time.sleep(1.0)
    assert decoded(server) == before  # nothing decodes for the cancelled request


@pytest.mark.model
def test_streams_dropped_at_random_points_leave_no_slot_busy(daemon: DaemonProcess) -> None:
    """100 streamed chats whose clients hang up after a random number of chunks (none
    to a dozen), 8 at a time: afterwards no slot is processing, nothing is in flight,
    and the model still answers."""
    model = load(daemon)
    [server] = llama_servers(model["pid"])
    rng = random.Random(15)
    cuts = [rng.randint(0, 12) for _ in range(100)]
    failures: list[str] = []

    def drop(i: int, after: int) -> None:
        try:
            conn = daemon.connect()
            conn.send("chat", {"model": MODEL, "messages": [{"role": "user", "content": f"Count upwards from {i}."}], "max_tokens": 200, "stream": True})
            for _ in range(after):
                if "id" in conn.read():  # the whole answer came first: nothing left to drop
                    break
            conn.close()  # the client goes away mid-stream, without $/cancel
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(f"{i}: {exc!r}")

    for start in range(0, len(cuts), 8):
        batch = [threading.Thread(target=drop, args=(start + j, n)) for j, n in enumerate(cuts[start : start + 8])]
        for t in batch:
            t.start()
        for t in batch:
            t.join()
    assert not failures, failures[:3]
    assert wait_until(lambda: not any(s["is_processing"] for s in slots(server)), timeout=30)
    with daemon.connect() as conn:
        assert wait_until(lambda: conn.call("models.loaded")["result"]["models"][0]["in_flight"] == 0, timeout=30)
        answer = conn.call("chat", {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4})
    assert answer["result"]["usage"]["completion_tokens"] >= 1
    assert llama_servers(model["pid"]) == [server]  # the same llama-server served it all


@pytest.mark.model
def test_a_killed_llama_server_is_a_worker_crash_naming_its_status(daemon: DaemonProcess) -> None:
    model = load(daemon)
    [server] = llama_servers(model["pid"])
    with daemon.connect() as conn:
        rid = conn.send("complete", {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 4000, "stream": True})
        conn.read()
        server.send_signal(signal.SIGKILL)
        _, final = conn.until_response(rid)
        err = final["error"]
        assert err["data"]["name"] == "WorkerCrashed", err
        cause = err["data"]["cause"]
        assert "llama-server" in cause and "SIGKILL" in cause, cause
        assert wait_until(lambda: not pid_alive(model["pid"]), timeout=10)
        again = conn.call("complete", {"model": MODEL, "prompt": "The sky is", "max_tokens": 2})["result"]  # a new worker serves
    assert again["finish_reason"] == "length"


@pytest.mark.model
def test_no_orphan_llama_server_after_kill_9(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path).start()
    try:
        worker = load(d)["pid"]
        [server] = llama_servers(worker)
        os.kill(worker, signal.SIGKILL)  # the worker: its llama-server goes with it
        assert wait_until(lambda: not pid_alive(server.pid), timeout=10)

        def unloaded() -> bool:
            with d.connect() as conn:
                return not conn.call("models.loaded")["result"]["models"]

        assert wait_until(unloaded, timeout=10)  # the daemon saw the worker go
        worker = load(d)["pid"]
        [server] = llama_servers(worker)
        os.kill(d.pid, signal.SIGKILL)  # the daemon: its worker ends, and the worker's llama-server
        assert wait_until(lambda: not pid_alive(worker) and not pid_alive(server.pid), timeout=15)
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


@pytest.mark.model
def test_a_gguf_llama_server_refuses_is_invalid_model_file(daemon: DaemonProcess, tmp_path: Path) -> None:
    broken = write_tiny_llama(tmp_path / "broken.gguf", declared_layers=3)  # 3 blocks declared, 2 written
    with daemon.connect() as conn:
        assert "result" in conn.call("models.import", {"path": str(broken), "name": "broken-llama"})
        err = conn.call("models.load", {"model": "broken-llama", "backend": "llamacpp"})["error"]
    assert err["data"]["name"] == "InvalidModelFile", err
    assert "llama-server cannot load" in err["message"] and "blk.2" in err["message"], err["message"]


@pytest.mark.parametrize("named_by", ["env", "config"])
def test_a_missing_binary_is_no_backend_naming_the_fix(tmp_path: Path, named_by: str) -> None:
    missing = str(tmp_path / "no-llama-server")
    if named_by == "env":
        d = DaemonProcess(tmp_path, IMPETUS_LLAMA_SERVER=missing).start()
    else:
        d = DaemonProcess(tmp_path, config=f'llama_server = "{missing}"\n').start()
    try:
        with d.connect() as conn:
            err = conn.call("models.load", {"model": MODEL, "backend": "llamacpp"})["error"]
        assert err["data"]["name"] == "NoBackend", err
        assert "scripts/setup" in err["message"] and "IMPETUS_LLAMA_SERVER" in err["message"] and missing in err["message"]
    finally:
        d.stop()


def long_system(topic: str, n: int = 40) -> str:
    """A system prompt of several hundred tokens, its own for ``topic``."""
    return " ".join(f"Rule {i} for the {topic} desk: answer briefly and mention {topic} item number {i * 7 % 13}." for i in range(n))


def chat(conn: Any, system: str, question: str) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    reply = conn.call("chat", {"model": MODEL, "messages": messages, "max_tokens": 2, "temperature": 0})
    assert "result" in reply, reply
    return reply["result"]


@pytest.mark.model
def test_requests_go_to_the_slot_holding_their_prefix(daemon: DaemonProcess) -> None:
    """Two conversations with long prefixes alternate with unrelated prompts that would
    take the least recently used slot (llama-server's own choice): each conversation
    finds its prefix again in its slot."""
    load(daemon)
    bakery, garage = long_system("bakery"), long_system("garage")
    with daemon.connect() as conn:
        chat(conn, bakery, "Hi?")
        chat(conn, garage, "Hi?")
        for word in ["alpha", "beta", "gamma", "delta", "epsilon"]:
            assert "result" in conn.call("complete", {"model": MODEL, "prompt": f"{word} one two", "max_tokens": 1})
        for _ in range(2):
            for system in (bakery, garage):
                usage = chat(conn, system, "Open today?")["usage"]
                assert usage["prompt_tokens"] > 400
                assert usage["cached_tokens"] >= usage["prompt_tokens"] - 12, usage  # all but the question
