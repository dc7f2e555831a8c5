"""The registry and local imports: import, show, cp, rm, verify, through the CLI
and the socket, against real daemons; the registry survives kill -9."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import DaemonProcess

from impetusd.store.catalog import CATALOG

BUNDLED = CATALOG["smollm2-135m"].local_path()


def ctl(daemon: DaemonProcess, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "impetusctl", "--no-autostart", *args], env=daemon.env, capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_import_show_copy_verify_remove(daemon: DaemonProcess, tmp_path: Path) -> None:
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(BUNDLED.read_bytes())  # type: ignore[union-attr]
    info = json.loads(ctl(daemon, "--json", "import", str(gguf), "--name", "mine").stdout)
    assert info["name"] == "mine" and info["format"] == "gguf" and info["metadata"]["architecture"] == "llama"
    [f] = info["files"]
    import hashlib

    assert f["sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest() and f["size"] == gguf.stat().st_size
    shown = ctl(daemon, "show", "mine").stdout
    assert "format:         gguf" in shown and "Q4_1" in shown and "chat template:  yes" in shown and f["sha256"] in shown
    ctl(daemon, "cp", "mine", "mine-copy")
    listed = {m["name"]: m for m in json.loads(ctl(daemon, "--json", "ls").stdout)["models"]}
    assert listed["mine"]["source"].startswith("local:") and listed["mine-copy"]["path"] == str(gguf)
    again = ctl(daemon, "import", str(gguf), "--name", "mine", check=False)
    assert again.returncode == 1 and "[ModelExists]" in again.stderr
    assert "mine: ok" in ctl(daemon, "verify").stdout
    with gguf.open("r+b") as fh:  # one flipped byte
        fh.seek(5000)
        byte = fh.read(1)
        fh.seek(5000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    bad = ctl(daemon, "--json", "verify", "mine", check=False)
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["ok"] is False and "sha256" in report["models"][0]["files"][0]["problem"]
    ctl(daemon, "rm", "mine-copy")
    assert gguf.exists()  # an import's files are the user's: never deleted
    names = [m["name"] for m in json.loads(ctl(daemon, "--json", "ls").stdout)["models"]]
    assert "mine-copy" not in names and "mine" in names


def test_rm_refuses_a_loaded_model_unless_forced(daemon: DaemonProcess, echo_model: Path) -> None:
    ctl(daemon, "import", str(echo_model), "--name", "talker")
    ctl(daemon, "load", "talker")
    refused = ctl(daemon, "rm", "talker", check=False)
    assert refused.returncode == 1 and "[ModelInUse]" in refused.stderr
    forced = json.loads(ctl(daemon, "--json", "rm", "talker", "--force").stdout)
    assert forced["unloaded"] is True
    assert json.loads(ctl(daemon, "--json", "ps").stdout)["models"] == []


def test_pickle_weights_are_refused_with_an_explanation(daemon: DaemonProcess, tmp_path: Path) -> None:
    weights = tmp_path / "pytorch_model.bin"
    weights.write_bytes(b"\x80\x04not really a pickle")
    refused = ctl(daemon, "import", str(weights), check=False)
    assert refused.returncode == 1 and "[PickleRefused]" in refused.stderr
    assert "arbitrary code" in refused.stderr and "safetensors" in refused.stderr


def test_registry_survives_kill_9(daemon: DaemonProcess, echo_model: Path) -> None:
    ctl(daemon, "import", str(echo_model), "--name", "durable")
    daemon.stop(signal.SIGKILL)
    daemon.start()
    listed = {m["name"] for m in json.loads(ctl(daemon, "--json", "ls").stdout)["models"]}
    assert "durable" in listed
    with daemon.connect() as conn:
        reply = conn.call("chat", {"model": "durable", "messages": [{"role": "user", "content": "still here"}]})
    assert reply["result"]["message"]["content"] == "still here"


def test_import_folders_registers_only_the_model_files(daemon: DaemonProcess, tmp_path: Path) -> None:
    from safetensors_factory import write_hf_llama, write_mlx_llama

    mlx_dir = tmp_path / "tiny-mlx"
    write_mlx_llama(mlx_dir, bits=4)
    (mlx_dir / "README.md").write_text("notes that are not part of the model")
    info = json.loads(ctl(daemon, "--json", "import", str(mlx_dir)).stdout)
    assert info["name"] == "tiny-mlx" and info["format"] == "mlx" and 4 in info["metadata"]["quantized_bits"]
    names = {f["name"] for f in info["files"]}
    assert "model.safetensors" in names and "config.json" in names and "README.md" not in names
    hf_dir = tmp_path / "tiny-hf"
    write_hf_llama(hf_dir, shards=2)
    hf = json.loads(ctl(daemon, "--json", "import", str(hf_dir), "--name", "hf-llama").stdout)
    assert hf["format"] == "safetensors" and sum(1 for f in hf["files"] if f["name"].endswith(".safetensors")) == 2
    assert "hf-llama: ok" in ctl(daemon, "verify", "hf-llama").stdout
    loaded = ctl(daemon, "load", "hf-llama", "--keep-alive", "0")
    assert loaded.returncode == 0 and "on mlx" in loaded.stdout  # the MLX backend runs folders


def test_catalog_alias_names_cannot_be_taken(daemon: DaemonProcess, echo_model: Path) -> None:
    """A copy or an import under a name an alias resolves would make that alias
    answer with another model (embed all-minilm-l6-v2 from SmolLM2's states)."""
    ctl(daemon, "import", str(echo_model), "--name", "talker")
    with daemon.connect() as conn:
        for alias in ("all-minilm-l6-v2", "SmolLM2-135M"):
            copied = conn.call("models.copy", {"source": "talker", "destination": alias})
            assert copied["error"]["data"]["name"] == "ModelExists", copied
            assert "alias" in copied["error"]["message"]
            imported = conn.call("models.import", {"path": str(echo_model), "name": alias})
            assert imported["error"]["data"]["name"] == "ModelExists", imported
            assert conn.call("models.show", {"model": alias})["error"]["data"]["name"] == "ModelNotFound"
    local = [m["name"] for m in json.loads(ctl(daemon, "--json", "ls").stdout)["models"] if m["source"].startswith("local:")]
    assert local == ["talker"]


BAD_NAMES = ["/tmp/abs", "../../evil", "a/../b", "a\x00b", "x" * 100_000, "-dash", "sp ace", "a//b", "trailing/", "naïve", "a\nb"]


def test_registered_names_are_restricted(daemon: DaemonProcess, echo_model: Path, tmp_path: Path) -> None:
    with daemon.connect() as conn:
        for bad in BAD_NAMES:
            got = conn.call("models.import", {"path": str(echo_model), "name": bad})
            assert got["error"]["data"]["name"] == "InvalidParams" and got["error"]["data"]["field"] == "name", (bad[:40], got)
        assert "result" in conn.call("models.import", {"path": str(echo_model), "name": "org/my.model_v2:Q4_K_M"})
        for bad in BAD_NAMES:
            got = conn.call("models.copy", {"source": "org/my.model_v2:Q4_K_M", "destination": bad})
            assert got["error"]["data"]["name"] == "InvalidParams" and got["error"]["data"]["field"] == "destination", (bad[:40], got)
        for bad in ("../../evil", "a/..", "org/" + "r" * 300):
            got = conn.call("models.pull", {"model": bad})
            assert got["error"]["data"]["name"] == "InvalidParams", (bad[:40], got)
        # without --name the file's name is made into a valid one
        odd = tmp_path / "my model (1).echo"
        odd.write_bytes(echo_model.read_bytes())
        assert conn.call("models.import", {"path": str(odd)})["result"]["name"] == "my-model-1"
    local = sorted(m["name"] for m in json.loads(ctl(daemon, "--json", "ls").stdout)["models"] if m["source"].startswith("local:"))
    assert local == ["my-model-1", "org/my.model_v2:Q4_K_M"]


def test_keep_alive_must_be_finite(daemon: DaemonProcess, echo_model: Path) -> None:
    ctl(daemon, "import", str(echo_model), "--name", "talker")
    with daemon.connect() as conn:
        for value in ["nan", "NaN", " nan ", "inf", "-inf", "infs", "1e400", "nanm"]:
            got = conn.call("models.load", {"model": "talker", "keep_alive": value})
            assert "error" in got and got["error"]["data"]["name"] == "InvalidParams", (value, got)
            assert got["error"]["data"].get("field") == "keep_alive" and "keep_alive" in got["error"]["message"], got
        conn.send_line(b'{"jsonrpc":"2.0","id":"big","method":"models.load","params":{"model":"talker","keep_alive":1e400}}')
        _, got = conn.until_response("big")
        assert "error" in got and got["error"]["data"]["name"] in ("InvalidParams", "ParseError"), got
        assert conn.call("models.loaded")["result"]["models"] == []  # nothing was pinned
        assert "result" in conn.call("models.load", {"model": "talker", "keep_alive": "5m"})


def test_home_and_everything_in_it_is_private_under_umask_022(tmp_path: Path, echo_model: Path) -> None:
    import os
    import stat

    root = tmp_path / "priv"
    root.mkdir()
    d = DaemonProcess(root, IMPETUS_PLUGINS="impetus_echo")
    old = os.umask(0o022)
    try:
        d.start()
    finally:
        os.umask(old)
    try:
        ctl(d, "import", str(echo_model), "--name", "talker")  # writes the registry (and its WAL)
        with d.connect() as conn:
            assert "result" in conn.call("models.load", {"model": "talker", "keep_alive": 0})
        seen = []
        for path in [d.home, *d.home.rglob("*")]:
            if path.is_symlink():
                continue
            mode = stat.S_IMODE(path.stat().st_mode)
            seen.append(path.name)
            assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
        assert {"registry.db", "registry.db-wal"} <= set(seen), seen
    finally:
        d.stop()
