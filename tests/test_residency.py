"""Residency on a real daemon: the memory budget, eviction of idle models, the
typed refusal, keep-alive, and each loaded model's rolling stats.

The echo backend (tests/plugins/impetus_echo.py) declares a 32 MiB worker
overhead, so an echo model's estimate is 32 MiB plus its file's size; a 48 MiB
budget holds one small echo model but never two.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers import DaemonProcess, pid_alive, wait_until

MIB = 1024 * 1024
BUDGET = 48 * MIB


@pytest.fixture
def tight(tmp_path_factory: pytest.TempPathFactory):
    d = DaemonProcess(tmp_path_factory.mktemp("res"), config=f"memory_budget_bytes = {BUDGET}\n", IMPETUS_PLUGINS="impetus_echo").start()
    yield d
    d.stop()


def _echo(path: Path, delay_s: float = 0.0, pad_bytes: int = 0) -> Path:
    """An echo model; ``pad_bytes`` of TOML comment make its file (its "weights") bigger."""
    body = f"delay_s = {delay_s}\n"
    if pad_bytes:
        line = "#" + "x" * 1023 + "\n"
        body += line * (pad_bytes // len(line))
    path.write_text(body)
    return path


def _chat(model: Path, text: str, **extra: object) -> dict:
    return {"model": str(model), "messages": [{"role": "user", "content": text}], **extra}


def test_a_load_that_does_not_fit_evicts_the_idle_model(tight: DaemonProcess, tmp_path: Path) -> None:
    first, second = _echo(tmp_path / "first.echo"), _echo(tmp_path / "second.echo")
    with tight.connect() as watcher, tight.connect() as conn:
        rid = watcher.send("events.subscribe", {"topics": ["model"]})
        time.sleep(0.2)
        pid = conn.call("models.load", {"model": str(first)})["result"]["model"]["pid"]
        loaded = conn.call("models.load", {"model": str(second)})["result"]["model"]
        assert wait_until(lambda: not pid_alive(pid), timeout=5)
        listing = conn.call("models.loaded")["result"]
        assert [m["name"] for m in listing["models"]] == [str(second.resolve())]
        assert listing["memory"]["budget_bytes"] == BUDGET and listing["memory"]["source"] == "config"
        assert loaded["estimate"]["overhead_bytes"] == 32 * MIB
        assert loaded["estimate"]["weights_bytes"] == second.stat().st_size
        events = []
        while not any(e["kind"] == "model.loaded" and e["model"] == str(second.resolve()) for e in events):
            events.append(watcher.read()["params"]["event"])
        [evicted] = [e for e in events if e["kind"] == "model.unloaded"]
        assert evicted["model"] == str(first.resolve())
        assert evicted["data"] == {"reason": "evicted", "pid": pid, "for": str(second.resolve())}
        watcher.send("$/cancel", {"id": rid}, notify=True)


def test_the_least_recently_used_idle_model_goes_first(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    # Room for two small echo models (~32 MiB each), not three.
    d = DaemonProcess(tmp_path_factory.mktemp("lru"), config=f"memory_budget_bytes = {90 * MIB}\n", IMPETUS_PLUGINS="impetus_echo").start()
    try:
        a, b, c = (_echo(tmp_path / f"{n}.echo") for n in "abc")
        with d.connect() as conn:
            conn.call("models.load", {"model": str(a)})
            conn.call("models.load", {"model": str(b)})
            conn.call("chat", _chat(a, "a is used again"))  # now b is the least recently used
            conn.call("models.load", {"model": str(c)})
            names = sorted(m["name"] for m in conn.call("models.loaded")["result"]["models"])
            assert names == sorted([str(a.resolve()), str(c.resolve())])
    finally:
        d.stop()


def test_a_model_that_can_never_fit_is_refused_and_nothing_is_unloaded(tight: DaemonProcess, tmp_path: Path) -> None:
    small, huge = _echo(tmp_path / "small.echo"), _echo(tmp_path / "huge.echo", pad_bytes=20 * MIB)
    with tight.connect() as conn:
        pid = conn.call("models.load", {"model": str(small)})["result"]["model"]["pid"]
        err = conn.call("models.load", {"model": str(huge)})["error"]
        assert err["code"] == 2006 and err["data"]["name"] == "InsufficientMemory"
        data = err["data"]
        assert data["model"] == str(huge.resolve()) and data["never_fits"] is True
        assert data["budget_bytes"] == BUDGET and data["needed_bytes"] > BUDGET
        assert data["needed_bytes"] == 32 * MIB + huge.stat().st_size
        assert data["busy"] == [] and data["loading"] == [] and "never fit" in err["message"]
        # A request for it is refused the same way, and the small model stays.
        assert conn.call("chat", _chat(huge, "hi"))["error"]["data"]["name"] == "InsufficientMemory"
        [still] = conn.call("models.loaded")["result"]["models"]
        assert still["pid"] == pid and pid_alive(pid)


def test_a_busy_model_is_not_evicted(tight: DaemonProcess, tmp_path: Path) -> None:
    slow, other = _echo(tmp_path / "slow.echo", delay_s=0.1), _echo(tmp_path / "other.echo")
    with tight.connect() as streamer, tight.connect() as conn:
        pid = conn.call("models.load", {"model": str(slow)})["result"]["model"]["pid"]
        rid = streamer.send("chat", _chat(slow, " ".join(["word"] * 20), stream=True))
        assert streamer.read()["method"] == "chat.chunk"  # the request is in flight
        err = conn.call("models.load", {"model": str(other)})["error"]
        assert err["data"]["name"] == "InsufficientMemory" and err["data"]["never_fits"] is False
        assert err["data"]["busy"] == [str(slow.resolve())]
        assert err["data"]["needed_bytes"] > err["data"]["available_bytes"]
        assert "busy" in err["message"]
        _, final = streamer.until_response(rid)
        assert final["result"]["finish_reason"] == "stop" and pid_alive(pid)
        # Once it is idle it can be evicted.
        assert "result" in conn.call("models.load", {"model": str(other)})
        assert wait_until(lambda: not pid_alive(pid), timeout=5)


def test_a_load_under_way_holds_its_room(tight: DaemonProcess, tmp_path: Path) -> None:
    slow = tmp_path / "slow-load.echo"
    slow.write_text("load_s = 1.5\n")
    other = _echo(tmp_path / "other.echo")
    with tight.connect() as first, tight.connect() as second:
        rid = first.send("models.load", {"model": str(slow)})
        time.sleep(0.5)  # its worker is loading
        err = second.call("models.load", {"model": str(other)})["error"]
        assert err["data"]["name"] == "InsufficientMemory" and err["data"]["loading"] == [str(slow.resolve())]
        assert err["data"]["busy"] == [] and "loading" in err["message"]
        _, done = first.until_response(rid)
        assert "result" in done


def test_keep_alive_zero_unloads_and_negative_keeps(tight: DaemonProcess, tmp_path: Path) -> None:
    model = _echo(tmp_path / "ka.echo")
    with tight.connect() as conn:
        loaded = conn.call("models.load", {"model": str(model), "keep_alive": -1})["result"]["model"]
        assert loaded["keep_alive_s"] is None and loaded["expires_in_s"] is None and loaded["expires_at"] is None
        conn.call("chat", _chat(model, "stay"))
        assert conn.call("models.loaded")["result"]["models"][0]["pid"] == loaded["pid"]
        conn.call("chat", _chat(model, "now go", keep_alive=0))
        assert wait_until(lambda: not pid_alive(loaded["pid"]), timeout=5)
        assert conn.call("models.loaded")["result"]["models"] == []
        timed = conn.call("models.load", {"model": str(model), "keep_alive": "1s"})["result"]["model"]
        assert timed["keep_alive_s"] == 1.0 and 0 < timed["expires_in_s"] <= 1.0
        assert wait_until(lambda: not pid_alive(timed["pid"]), timeout=10)


def test_models_loaded_stats_move_with_requests(tight: DaemonProcess, tmp_path: Path) -> None:
    model = _echo(tmp_path / "stats.echo")
    with tight.connect() as conn:
        first = conn.call("chat", _chat(model, "one two three"))["result"]
        assert first["timings"]["load_ms"] > 0  # this request caused the load
        second = conn.call("chat", _chat(model, "four five"))["result"]
        assert second["timings"]["load_ms"] == 0
        [m] = conn.call("models.loaded")["result"]["models"]
        assert m["requests"] == 2
        assert m["prompt_tokens"] == 5 and m["completion_tokens"] == 5
        assert m["rss_bytes"] > 10 * MIB and m["memory_bytes"] == max(m["rss_bytes"], m["estimate"]["total_bytes"])
        assert m["load_ms"] > 0 and m["keep_alive_s"] == 300.0 and 0 < m["expires_in_s"] <= 300
        memory = conn.call("models.loaded")["result"]["memory"]
        assert 0 < memory["used_bytes"] and memory["available_bytes"] == max(BUDGET - memory["used_bytes"], 0)


def test_a_reported_working_set_caps_the_automatic_budget(daemon: DaemonProcess, tmp_path: Path) -> None:
    model = tmp_path / "metal.echo"
    model.write_text(f"working_set_bytes = {512 * MIB}\n")
    with daemon.connect() as conn:
        before = conn.call("models.loaded")["result"]["memory"]
        assert before["source"] in ("ram", "cgroup") and before["budget_bytes"] > 512 * MIB
        conn.call("models.load", {"model": str(model)})
        after = conn.call("models.loaded")["result"]["memory"]
        assert after["source"] == "working-set" and after["budget_bytes"] == 512 * MIB


def test_eviction_plan_and_rolling_decode_rate() -> None:
    from impetusd.residency.resident import RollingStats, MemoryUse, plan_room

    models = [MemoryUse(name="old", bytes=30, busy=False, last_used=1.0), MemoryUse(name="new", bytes=30, busy=False, last_used=2.0),
              MemoryUse(name="busy", bytes=30, busy=True, last_used=0.0)]
    assert plan_room(10, 100, models).evict == []
    assert plan_room(30, 100, models).evict == ["old"]
    assert plan_room(60, 100, models).evict == ["old", "new"]
    refused = plan_room(80, 100, models)
    assert not refused.fits and refused.evict == [] and refused.busy == ["busy"] and refused.available_bytes == 70
    assert plan_room(30, 100, models[:1], reserved=60).evict == ["old"]  # a load under way counts
    assert not plan_room(30, 100, models[:1], reserved=80).fits
    stats = RollingStats(window=2)
    stats.record(5, 10, 10.0)  # 1 s
    stats.record(5, 30, 10.0)  # 3 s
    assert stats.decode_tps() == pytest.approx(10.0)
    stats.record(5, 20, 40.0)  # 0.5 s; the first drops out of the window
    assert stats.decode_tps() == pytest.approx(50 / 3.5)
    assert stats.prompt_tokens == 15 and stats.completion_tokens == 60


def test_estimate_formula_and_budget_config(tmp_path: Path) -> None:
    from impetusd.engine.messages import ModelSpec
    from impetusd.residency.budget import estimate, kv_cache_bytes, machine_budget
    from impetusd.config import load_config
    from impetusd.protocol.errors import InvalidParams

    meta = {"block_count": 30, "head_count": 9, "head_count_kv": 3, "embedding_length": 576, "context_length": 8192, "quantization": "Q4_1"}
    assert kv_cache_bytes(meta, 4096) == 30 * 3 * 64 * 4096 * 2 * 2
    weights = tmp_path / "w.gguf"
    weights.write_bytes(b"x" * 1000)
    est = estimate(ModelSpec(name="m", path=str(weights), format="gguf", metadata=meta), 100, 16384)
    assert est.context_tokens == 8192 and est.total_bytes == 1000 + 30 * 3 * 64 * 8192 * 4 + 100
    assert load_config(home=tmp_path, env={"IMPETUS_MEMORY_BUDGET": "512MiB"}).memory_budget_bytes == 512 * MIB
    assert load_config(home=tmp_path, env={"IMPETUS_MEMORY_BUDGET": "2GB"}).memory_budget_bytes == 2 * 10**9
    with pytest.raises(InvalidParams):
        load_config(home=tmp_path, env={"IMPETUS_MEMORY_BUDGET": "lots"})
    (tmp_path / "config.toml").write_text("memory_budget_fraction = 1.5\n")
    with pytest.raises(InvalidParams):
        load_config(home=tmp_path, env={})
    (tmp_path / "config.toml").write_text('memory_budget_bytes = "1GiB"\nmemory_estimate_context = 2048\n')
    cfg = load_config(home=tmp_path, env={})
    assert cfg.memory_budget_bytes == 2**30 and cfg.memory_estimate_context == 2048
    auto = machine_budget(0.5)
    assert auto.source in ("ram", "cgroup") and auto.bytes > 0
    assert machine_budget(0.5, working_set=1000).bytes == 1000


def test_the_bundled_model_evicts_an_idle_gguf_model_and_reports_stats(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """Real MLX workers: a budget that holds the bundled model alone, so loading it
    unloads the small GGUF model loaded before it."""
    from gguf_factory import write_tiny_llama
    from impetus_gguf import inspect
    from impetusd.engine.messages import ModelSpec
    from impetusd.residency.budget import estimate
    from impetusd.store.catalog import CATALOG
    from impetusd.plugin.manager import build_registries, make_plugin_manager

    bundled = CATALOG["smollm2-135m"].local_path()
    assert bundled is not None
    mlx = build_registries(make_plugin_manager()).backends.get("mlx")
    assert mlx is not None
    spec = ModelSpec(name="smollm2-135m", path=str(bundled), format="gguf", metadata=inspect(bundled))
    from impetusd.workers.blas import worker_env

    assert mlx.memory_weights is not None
    need = estimate(spec, mlx.memory_overhead_bytes, 4096, mlx.memory_weights(spec, worker_env("auto"))).total_bytes
    tiny = write_tiny_llama(tmp_path / "tiny.gguf", "Q8_0")
    d = DaemonProcess(tmp_path_factory.mktemp("mlxres"), config=f"memory_budget_bytes = {need + MIB}\nbackend = {{gguf = \"mlx\"}}\n").start()
    try:
        with d.connect() as conn:
            tiny_pid = conn.call("models.load", {"model": str(tiny)})["result"]["model"]["pid"]
            reply = conn.call("chat", {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})["result"]
            assert reply["timings"]["load_ms"] > 0
            assert wait_until(lambda: not pid_alive(tiny_pid), timeout=10)
            [m] = conn.call("models.loaded")["result"]["models"]
            assert m["name"] == "smollm2-135m" and m["estimate"]["total_bytes"] == need
            assert m["requests"] == 1 and m["completion_tokens"] == reply["usage"]["completion_tokens"]
            assert m["prompt_tokens"] == reply["usage"]["prompt_tokens"]
            assert m["warmup_ms"] is not None and 0 < m["warmup_ms"] < m["load_ms"]
            if reply["timings"]["decode_tps"] is not None:
                assert m["decode_tps"] == pytest.approx(reply["timings"]["decode_tps"], rel=0.01)
    finally:
        d.stop()


def test_a_spare_worker_takes_the_next_load_and_is_replaced(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    import psutil

    from gguf_factory import write_tiny_llama

    tiny = write_tiny_llama(tmp_path / "tiny.gguf", "Q8_0")
    d = DaemonProcess(tmp_path_factory.mktemp("spare"), config="spare_worker = true\nbackend = {gguf = \"mlx\"}\n").start()
    children = lambda: {c.pid for c in psutil.Process(d.pid).children()}  # noqa: E731
    try:
        assert wait_until(lambda: len(children()) == 1, timeout=10)  # started with the daemon
        [spare] = children()
        with d.connect() as conn:
            loaded = conn.call("models.load", {"model": str(tiny)})["result"]["model"]
            assert loaded["pid"] == spare
            assert wait_until(lambda: len(children()) == 2, timeout=10)  # a replacement waits
            reply = conn.call("complete", {"model": str(tiny), "prompt": "the", "max_tokens": 2})
            assert "result" in reply, reply
        workers = children()
    finally:
        d.stop()
    assert wait_until(lambda: not any(pid_alive(p) for p in workers), timeout=5)  # the spare ends with the daemon


def test_the_mlx_estimate_counts_float32_weights_when_workers_get_openblas() -> None:
    """On a CPU with OpenBLAS preloaded the MLX worker widens small models to
    float32 (impetus_mlx/cpu.py); the daemon's estimate must count 4 bytes a parameter."""
    from impetus_gguf import inspect
    from impetusd.engine.messages import ModelSpec
    from impetusd.residency.budget import estimate
    from impetusd.store.catalog import CATALOG
    from impetusd.plugin.manager import build_registries, make_plugin_manager

    bundled = CATALOG["smollm2-135m"].local_path()
    assert bundled is not None
    mlx = build_registries(make_plugin_manager()).backends.get("mlx")
    assert mlx is not None and mlx.memory_weights is not None
    meta = inspect(bundled)
    spec = ModelSpec(name="smollm2-135m", path=str(bundled), format="gguf", metadata=meta)
    widened = mlx.memory_weights(spec, {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libopenblas.so.0"})
    assert widened == meta["parameters"] * 4 and widened > 4 * bundled.stat().st_size  # ~540 MB against a ~100 MB file
    assert mlx.memory_weights(spec, {}) is None  # no OpenBLAS: the quantized weights, as on disk
    embedding = ModelSpec(name="e", path=str(bundled), format="gguf", metadata={**meta, "kind": "embedding"})
    assert mlx.memory_weights(embedding, {"LD_PRELOAD": "libopenblas.so.0"}) is None
    plain = estimate(spec, mlx.memory_overhead_bytes, 4096)
    assert estimate(spec, mlx.memory_overhead_bytes, 4096, widened).total_bytes == plain.total_bytes - plain.weights_bytes + widened
