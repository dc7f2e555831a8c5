"""Pulls from a loopback Hub: a real HTTP server speaking the Hub's endpoints,
a real daemon pointed at it with HF_ENDPOINT, the CLI as a user runs it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fake_hub import FakeHub
from gguf_factory import write_tiny_llama
from helpers import DaemonProcess, ctrl_c_answers, wait_until

from impetusd.store.catalog import CATALOG

BUNDLED = CATALOG["smollm2-135m"]


@pytest.fixture
def hub():
    with FakeHub() as h:
        yield h


@pytest.fixture
def hub_daemon(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("p")
    (root / "home").mkdir()
    (root / "home" / "config.toml").write_text("pull_backoff_s = 0.05\n")
    d = DaemonProcess(root, IMPETUS_PLUGINS="impetus_echo", HF_ENDPOINT=hub.url, HF_HOME=str(root / "hf"), HF_HUB_DISABLE_TELEMETRY="1")
    d.env.pop("HF_TOKEN", None)
    d.start()
    yield d
    if d.proc and d.proc.poll() is None:
        d.stop()


def ctl(daemon: DaemonProcess, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "impetusctl", "--no-autostart", *args], env=daemon.env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def hub_cache(daemon: DaemonProcess) -> Path:
    return Path(daemon.env["HF_HOME"]) / "hub"


def gguf_bytes(tmp_path: Path, qtype: str, seed: int = 0, hidden: int = 64) -> bytes:
    return write_tiny_llama(tmp_path / f"{qtype}-{seed}.gguf", qtype, seed=seed, hidden=hidden).read_bytes()


def file_gets(hub: FakeHub, name: str) -> list:
    return [r for r in hub.requests if r.method == "GET" and r.path.endswith("/" + name)]


def test_pull_alias_with_progress_then_run(hub: FakeHub, hub_daemon: DaemonProcess) -> None:
    data = BUNDLED.local_path().read_bytes()  # type: ignore[union-attr]
    commit = hub.add_repo(BUNDLED.repo, {BUNDLED.file: data, "README.md": b"# SmolLM2\n"})
    hub.faults.slow(BUNDLED.file, 40 * 1024 * 1024)  # ~2.5 s, so the bar has time to move
    done = ctl(hub_daemon, "pull", "smollm2-135m")
    percents = {int(p) for p in re.findall(r"(\d+)%", done.stderr)}
    assert len(percents) >= 3 and max(percents) == 100, done.stderr[-1000:]
    assert "verified" in done.stdout
    listed = {m["name"]: m for m in json.loads(ctl(hub_daemon, "--json", "ls").stdout)["models"]}
    entry = listed["smollm2-135m"]
    assert entry["source"].startswith(f"hf:{BUNDLED.repo}@{commit[:12]}")
    snap = hub_cache(hub_daemon) / f"models--{BUNDLED.repo.replace('/', '--')}" / "snapshots" / commit / BUNDLED.file
    assert entry["path"] == str(snap) and snap.is_symlink()
    assert hashlib.sha256(snap.read_bytes()).digest() == hashlib.sha256(data).digest()
    shown = json.loads(ctl(hub_daemon, "--json", "show", "smollm2-135m").stdout)
    assert [f["name"] for f in shown["files"]] == [BUNDLED.file]  # not the README
    answer = ctl(hub_daemon, "run", "smollm2-135m", "Which city is the capital of France?", "--max-tokens", "12")
    assert "Paris" in answer.stdout
    # Another tool finds the file in the shared cache without downloading.
    from huggingface_hub import hf_hub_download

    found = hf_hub_download(BUNDLED.repo, BUNDLED.file, cache_dir=hub_cache(hub_daemon), local_files_only=True)
    assert Path(found).resolve() == snap.resolve()
    again = ctl(hub_daemon, "pull", "smollm2-135m")
    assert "already registered" in again.stdout


def test_dropped_connections_resume(hub: FakeHub, hub_daemon: DaemonProcess, tmp_path: Path) -> None:
    # a real GGUF header and tensors, then 6 MB of padding the header reader ignores
    payload = gguf_bytes(tmp_path, "F32", hidden=256) + os.urandom(6 * 1024 * 1024)
    hub.add_repo("test/blobby-GGUF", {"blobby-F32.gguf": payload})
    hub.faults.drop_after("blobby-F32.gguf", 1_000_000, times=5)
    ctl(hub_daemon, "pull", "test/blobby-GGUF:F32")
    gets = file_gets(hub, "blobby-F32.gguf")
    starts = [r.range_start for r in gets]
    assert len(gets) >= 6 and starts[0] is None and all(s and s > 0 for s in starts[1:]), starts
    assert starts[1:] == sorted(starts[1:])  # each retry resumed where the last one stopped
    shown = json.loads(ctl(hub_daemon, "--json", "show", "test/blobby-GGUF:F32").stdout)
    assert shown["files"][0]["sha256"] == hashlib.sha256(payload).hexdigest()


def test_corruption_is_caught(hub: FakeHub, hub_daemon: DaemonProcess, tmp_path: Path) -> None:
    payload = gguf_bytes(tmp_path, "F32", hidden=128)
    hub.add_repo("test/flaky-GGUF", {"flaky-F32.gguf": payload})
    hub.faults.corrupt("flaky-F32.gguf", 4096, times=1)  # once: fetched again, then right
    ctl(hub_daemon, "pull", "test/flaky-GGUF")
    shown = json.loads(ctl(hub_daemon, "--json", "show", "test/flaky-GGUF").stdout)
    assert shown["files"][0]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert len(file_gets(hub, "flaky-F32.gguf")) == 2

    hub.add_repo("test/rotten-GGUF", {"rotten-F32.gguf": payload})
    hub.faults.corrupt("rotten-F32.gguf", 100, times=50)  # always wrong
    failed = ctl(hub_daemon, "pull", "test/rotten-GGUF", check=False)
    assert failed.returncode == 1 and "[ChecksumMismatch]" in failed.stderr
    names = [m["name"] for m in json.loads(ctl(hub_daemon, "--json", "ls").stdout)["models"]]
    assert "test/rotten-GGUF" not in names
    blobs = hub_cache(hub_daemon) / "models--test--rotten-GGUF" / "blobs"
    assert not any(p.name == hashlib.sha256(payload).hexdigest() for p in blobs.glob("*")) if blobs.exists() else True


def test_server_errors_are_retried_client_errors_are_not(hub: FakeHub, hub_daemon: DaemonProcess, tmp_path: Path) -> None:
    payload = gguf_bytes(tmp_path, "F32")
    hub.add_repo("test/busy-GGUF", {"busy-F32.gguf": payload})
    hub.faults.status("busy-F32.gguf", 503, times=3)
    ctl(hub_daemon, "pull", "test/busy-GGUF")
    assert len(file_gets(hub, "busy-F32.gguf")) == 4

    missing = ctl(hub_daemon, "pull", "nobody/nothing", check=False)
    assert missing.returncode == 1 and "[RepoNotFound]" in missing.stderr
    norev = ctl(hub_daemon, "pull", "test/busy-GGUF@v9", check=False)
    assert norev.returncode == 1 and "[RevisionNotFound]" in norev.stderr
    nofile = ctl(hub_daemon, "pull", "test/busy-GGUF:Q2_K", check=False)
    assert nofile.returncode == 1 and ("[NoMatchingFiles]" in nofile.stderr or "[RevisionNotFound]" in nofile.stderr)


def test_gated_repo_needs_a_token(hub: FakeHub, hub_daemon: DaemonProcess, tmp_path: Path) -> None:
    hub.require_token = "hf_test_token"
    hub.add_repo("test/gated-GGUF", {"gated-F32.gguf": gguf_bytes(tmp_path, "F32")}, gated=True)
    refused = ctl(hub_daemon, "pull", "test/gated-GGUF", check=False)
    assert refused.returncode == 1 and "[GatedRepo]" in refused.stderr and "HF_TOKEN" in refused.stderr
    hub_daemon.stop()
    hub_daemon.env["HF_TOKEN"] = "hf_test_token"
    hub_daemon.start()
    ctl(hub_daemon, "pull", "test/gated-GGUF")


def test_disk_space_is_checked_before_the_first_byte(hub: FakeHub, hub_daemon: DaemonProcess, tmp_path: Path) -> None:
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    hub.add_repo("test/huge-GGUF", {"huge-F32.gguf": gguf_bytes(tmp_path, "F32")}, advertised_sizes={"huge-F32.gguf": free * 2})
    failed = ctl(hub_daemon, "pull", "test/huge-GGUF", check=False)
    assert failed.returncode == 1 and "[DiskFull]" in failed.stderr and "GB" in failed.stderr
    assert file_gets(hub, "huge-F32.gguf") == []


def _partial_size(daemon: DaemonProcess, repo: str) -> int:
    blobs = hub_cache(daemon) / f"models--{repo.replace('/', '--')}" / "blobs"
    return sum(p.stat().st_size for p in blobs.glob("*.impetus-partial")) if blobs.exists() else 0


def test_kill_9_mid_pull_leaves_no_model_and_resumes(hub: FakeHub, hub_daemon: DaemonProcess, tmp_path: Path) -> None:
    payload = gguf_bytes(tmp_path, "F32", hidden=256) + os.urandom(8 * 1024 * 1024)
    hub.add_repo("test/big-GGUF", {"big-F32.gguf": payload})
    hub.faults.slow("big-F32.gguf", 2 * 1024 * 1024)
    puller = subprocess.Popen([sys.executable, "-m", "impetusctl", "--no-autostart", "pull", "test/big-GGUF"], env=hub_daemon.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_until(lambda: _partial_size(hub_daemon, "test/big-GGUF") > 1024 * 1024, 30)
    hub_daemon.stop(signal.SIGKILL)
    puller.wait(30)
    kept = _partial_size(hub_daemon, "test/big-GGUF")
    hub.faults.clear()
    hub_daemon.start()
    names = [m["name"] for m in json.loads(ctl(hub_daemon, "--json", "ls").stdout)["models"]]
    assert "test/big-GGUF" not in names
    ctl(hub_daemon, "pull", "test/big-GGUF")
    last = file_gets(hub, "big-F32.gguf")[-1]
    assert last.range_start is not None and last.range_start >= kept - 2 * 1024 * 1024 and last.range_start > 0
    shown = json.loads(ctl(hub_daemon, "--json", "show", "test/big-GGUF").stdout)
    assert shown["files"][0]["sha256"] == hashlib.sha256(payload).hexdigest()


def test_cancel_keeps_a_resumable_partial(hub: FakeHub, hub_daemon: DaemonProcess, tmp_path: Path) -> None:
    payload = gguf_bytes(tmp_path, "F32", hidden=256) + os.urandom(6 * 1024 * 1024)
    hub.add_repo("test/stop-GGUF", {"stop-F32.gguf": payload})
    hub.faults.slow("stop-F32.gguf", 2 * 1024 * 1024)
    with hub_daemon.connect() as conn:
        rid = conn.send("models.pull", {"model": "test/stop-GGUF"})
        while True:
            msg = conn.read()
            if msg.get("method") == "models.progress" and msg["params"]["done"] > 1024 * 1024:
                assert msg["params"]["id"] == rid and msg["params"]["total"] == len(payload)
                break
        conn.send("$/cancel", {"id": rid}, notify=True)
        _, final = conn.until_response(rid)
    assert final["result"]["status"] == "cancelled"
    assert wait_until(lambda: _partial_size(hub_daemon, "test/stop-GGUF") > 1024 * 1024, 5)
    hub.faults.clear()
    ctl(hub_daemon, "pull", "test/stop-GGUF")
    starts = [r.range_start for r in file_gets(hub, "stop-F32.gguf")]
    assert starts[0] is None and starts[-1] > 1024 * 1024


def test_concurrent_pulls_share_one_transfer(hub: FakeHub, hub_daemon: DaemonProcess, tmp_path: Path) -> None:
    hub.add_repo("test/one-GGUF", {"one-F32.gguf": gguf_bytes(tmp_path, "F32", seed=1, hidden=256)})
    hub.add_repo("test/two-GGUF", {"two-F32.gguf": gguf_bytes(tmp_path, "F32", seed=2, hidden=256)})
    hub.faults.slow("*.gguf", 1024 * 1024)
    runs = [
        subprocess.Popen([sys.executable, "-m", "impetusctl", "--no-autostart", "--json", "pull", name], env=hub_daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # the same model twice, and under a second name selecting the same file
        for name in ("test/one-GGUF", "test/two-GGUF", "test/one-GGUF", "test/one-GGUF:F32")
    ]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in runs]
    assert all(r["status"] == "pulled" for r in results)
    assert len(file_gets(hub, "one-F32.gguf")) == 1 and len(file_gets(hub, "two-F32.gguf")) == 1


def test_rm_frees_what_nothing_else_uses(hub: FakeHub, hub_daemon: DaemonProcess, tmp_path: Path) -> None:
    payload = gguf_bytes(tmp_path, "F32")
    hub.add_repo("test/gone-GGUF", {"gone-F32.gguf": payload})
    ctl(hub_daemon, "pull", "test/gone-GGUF")
    ctl(hub_daemon, "cp", "test/gone-GGUF", "gone-too")
    blob = hub_cache(hub_daemon) / "models--test--gone-GGUF" / "blobs" / hashlib.sha256(payload).hexdigest()
    assert blob.exists()
    ctl(hub_daemon, "rm", "test/gone-GGUF")
    assert blob.exists()  # the copy still uses it
    freed = json.loads(ctl(hub_daemon, "--json", "rm", "gone-too").stdout)
    assert freed["freed_bytes"] == len(payload) and not blob.exists()


def test_selector_and_default_quantization(hub: FakeHub, hub_daemon: DaemonProcess, tmp_path: Path) -> None:
    files = {f"multi-{q}.gguf": gguf_bytes(tmp_path, q) for q in ("F32", "Q8_0", "Q4_0")}
    hub.add_repo("test/multi-GGUF", {**files, "mmproj-multi-F16.gguf": b"GGUF....", "README.md": b"hi"})
    ambiguous = ctl(hub_daemon, "pull", "test/multi-GGUF", check=False)
    assert ambiguous.returncode == 1 and "[NoMatchingFiles]" in ambiguous.stderr and "Q8_0" in ambiguous.stderr
    ctl(hub_daemon, "pull", "test/multi-GGUF:q8_0")
    shown = json.loads(ctl(hub_daemon, "--json", "show", "test/multi-GGUF:q8_0").stdout)
    assert [f["name"] for f in shown["files"]] == ["multi-Q8_0.gguf"] and shown["metadata"]["quantization"] == "Q8_0"
    assert file_gets(hub, "multi-Q4_0.gguf") == [] and file_gets(hub, "multi-F32.gguf") == []


def test_revision_suffix_pulls_that_commit(hub: FakeHub, hub_daemon: DaemonProcess, tmp_path: Path) -> None:
    old = gguf_bytes(tmp_path, "F32", seed=1)
    new = gguf_bytes(tmp_path, "F32", seed=2)
    first = hub.add_repo("test/evolving-GGUF", {"evolving-F32.gguf": old}, revision="v1")
    hub.add_repo("test/evolving-GGUF", {"evolving-F32.gguf": new}, revision="main")
    ctl(hub_daemon, "pull", "test/evolving-GGUF:v1")
    shown = json.loads(ctl(hub_daemon, "--json", "show", "test/evolving-GGUF:v1").stdout)
    assert shown["commit"] == first and shown["revision"] == "v1"
    assert shown["files"][0]["sha256"] == hashlib.sha256(old).hexdigest()
    ref = hub_cache(hub_daemon) / "models--test--evolving-GGUF" / "refs" / "v1"
    assert ref.read_text() == first


def test_folder_repo_pulls_only_what_the_model_needs(hub: FakeHub, hub_daemon: DaemonProcess, tmp_path: Path) -> None:
    from safetensors_factory import write_mlx_llama

    folder = tmp_path / "tiny-mlx"
    write_mlx_llama(folder, bits=4)
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    extras = {"README.md": b"# card", "pytorch_model.bin": b"\x80\x04junk", "onnx/model.onnx": b"onnx", "logo.png": b"\x89PNG"}
    hub.add_repo("test/tiny-mlx-4bit", {**files, **extras})
    info = json.loads(ctl(hub_daemon, "--json", "pull", "test/tiny-mlx-4bit").stdout)
    model = info["model"]
    assert model["format"] == "mlx" and {f["name"] for f in model["files"]} == set(files)
    assert all(file_gets(hub, name) == [] for name in extras)
    for f in model["files"]:
        assert f["sha256"] == hashlib.sha256(files[f["name"]]).hexdigest()


def test_ctrl_c_in_impetusctl_pull_stops_and_pull_resumes(hub: FakeHub, hub_daemon: DaemonProcess, tmp_path: Path) -> None:
    payload = gguf_bytes(tmp_path, "F32", hidden=256) + os.urandom(6 * 1024 * 1024)
    hub.add_repo("test/interrupted-GGUF", {"interrupted-F32.gguf": payload})
    held = 2 * 1024 * 1024
    release = hub.faults.hold("interrupted-F32.gguf", held)  # the transfer waits for us, however busy the machine
    puller = subprocess.Popen(
        [sys.executable, "-m", "impetusctl", "--no-autostart", "pull", "test/interrupted-GGUF"],
        env=hub_daemon.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_answers,
    )
    assert wait_until(lambda: _partial_size(hub_daemon, "test/interrupted-GGUF") == held, 180)  # only a bound: the hold makes it timing-free
    puller.send_signal(signal.SIGINT)
    _, err = puller.communicate(timeout=60)
    assert puller.returncode == 130 and "run the same command to resume" in err
    release.set()  # the held connection hangs up; the cancelled job ends without another byte
    assert _partial_size(hub_daemon, "test/interrupted-GGUF") == held
    ctl(hub_daemon, "pull", "test/interrupted-GGUF")
    assert file_gets(hub, "interrupted-F32.gguf")[-1].range_start == held
    shown = json.loads(ctl(hub_daemon, "--json", "show", "test/interrupted-GGUF").stdout)
    assert shown["files"][0]["sha256"] == hashlib.sha256(payload).hexdigest()


def test_sigterm_mid_pull_on_a_hub_that_never_answers_exits_and_frees_the_lock(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The Hub metadata call hangs (the server accepts and never answers); SIGTERM
    still ends the daemon within its grace plus a few seconds, and a new daemon
    takes the same socket."""
    root = tmp_path_factory.mktemp("hang")
    d = DaemonProcess(root, "shutdown_grace_s = 1.0\n", HF_ENDPOINT=hub.url, HF_HOME=str(root / "hf"), HF_HUB_DISABLE_TELEMETRY="1")
    d.env.pop("HF_TOKEN", None)
    d.start()
    hub.hang = True
    try:
        with d.connect() as conn:
            conn.send("models.pull", {"model": "someorg/nonexistent-repo"})
            assert wait_until(lambda: any("nonexistent-repo" in r.path for r in hub.requests), 30)
            time.sleep(0.3)
            d.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            started = time.monotonic()
            try:
                d.proc.wait(1.0 + 8.0)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                pytest.fail(f"impetusd still alive {time.monotonic() - started:.0f} s after SIGTERM: {d.log.read_text()[-2000:]}")
        hub.hang = False
        again = DaemonProcess(root, HF_ENDPOINT=hub.url, HF_HOME=str(root / "hf")).start()  # the lock is free
        again.stop()
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()


def test_a_hub_that_never_answers_fails_the_pull_in_time(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("hang2")
    d = DaemonProcess(root, "pull_timeout_s = 0.5\npull_attempts = 2\npull_backoff_s = 0.05\n", HF_ENDPOINT=hub.url, HF_HOME=str(root / "hf"))
    d.env.pop("HF_TOKEN", None)
    d.start()
    hub.hang = True
    try:
        started = time.monotonic()
        done = ctl(d, "pull", "someorg/nonexistent-repo", check=False, timeout=60)
        assert done.returncode == 1 and "[DownloadFailed]" in done.stderr, done.stderr
        assert time.monotonic() - started < 20
    finally:
        hub.hang = False
        d.stop()


def test_run_pulls_a_hub_model_that_is_not_here(hub: FakeHub, hub_daemon: DaemonProcess, tmp_path: Path) -> None:
    hub.add_repo("test/fresh-GGUF", {"fresh-F32.gguf": gguf_bytes(tmp_path, "F32")})
    done = ctl(hub_daemon, "--json", "run", "test/fresh-GGUF", "the", "--max-tokens", "3")
    assert "pulling it" in done.stderr
    result = json.loads(done.stdout)
    assert result["model"] == "test/fresh-GGUF" and result["usage"]["completion_tokens"] >= 1
    missing = ctl(hub_daemon, "run", str(tmp_path / "no-such.gguf"), "hi", check=False)
    assert missing.returncode == 1 and "[ModelNotFound]" in missing.stderr and "pulling" not in missing.stderr


def test_a_stalled_transfer_times_out_and_resumes(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    root = tmp_path_factory.mktemp("stall")
    (root / "home").mkdir()
    (root / "home" / "config.toml").write_text("pull_backoff_s = 0.05\npull_timeout_s = 1.0\nmax_concurrent_pulls = 1\n")
    d = DaemonProcess(root, HF_ENDPOINT=hub.url, HF_HOME=str(root / "hf")).start()
    try:
        payload = gguf_bytes(tmp_path, "F32", hidden=256)
        hub.add_repo("test/stalls-GGUF", {"stalls-F32.gguf": payload})
        hub.faults.stall("stalls-F32.gguf", 300_000, seconds=5)
        started = time.monotonic()
        ctl(d, "pull", "test/stalls-GGUF")
        assert time.monotonic() - started < 5  # the stall was cut short by the timeout, not waited out
        starts = [r.range_start for r in file_gets(hub, "stalls-F32.gguf")]
        assert starts[0] is None and starts[1] is not None and starts[1] >= 300_000 - 65536
        shown = json.loads(ctl(d, "--json", "show", "test/stalls-GGUF").stdout)
        assert shown["files"][0]["sha256"] == hashlib.sha256(payload).hexdigest()
    finally:
        d.stop()


def test_sentence_transformers_folder_pulls_its_module_configs(hub: FakeHub, hub_daemon: DaemonProcess, tmp_path: Path) -> None:
    """The embedding alias's repo: modules.json and 1_Pooling/config.json come along;
    the pulled model embeds (a tiny random BERT stands in for the real weights)."""
    from safetensors_factory import write_bert

    folder = write_bert(tmp_path / "bert", pooling="cls", normalize=False)
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    extras = {"README.md": b"# card", "pytorch_model.bin": b"\x80\x04junk", "onnx/model.onnx": b"onnx", "train_script.py": b"print()"}
    hub.add_repo(CATALOG["all-minilm-l6-v2"].repo, {**files, **extras})
    model = json.loads(ctl(hub_daemon, "--json", "pull", "all-minilm-l6-v2").stdout)["model"]
    assert model["format"] == "safetensors" and model["metadata"]["kind"] == "embedding"
    assert {f["name"] for f in model["files"]} == set(files) and "1_Pooling/config.json" in files
    assert all(file_gets(hub, name) == [] for name in extras)
    with hub_daemon.connect() as conn:
        result = conn.call("embed", {"model": "all-minilm-l6-v2", "input": ["hello"], "keep_alive": 0})["result"]
    assert len(result["embeddings"][0]) == 32  # the pulled model, not the installed package's
