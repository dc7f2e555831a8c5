"""Pull throughput: ``impetusctl pull`` through the daemon vs huggingface_hub's
``hf_hub_download`` in-process, the same file from the same loopback Hub, in one run.

Prints one JSON object. Usage: .venv/bin/python bench/pull.py [--mb 200] [--runs 3]
The loopback Hub is the test suite's (tests/fake_hub.py); both sides download into
fresh caches; Impetus also verifies the sha256 and registers the model, which is
part of what is timed. Compare the ratio; these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fake_hub import FakeHub  # noqa: E402
from gguf_factory import write_tiny_llama  # noqa: E402

from impetusctl.client import Client  # noqa: E402

REPO = "bench/payload-GGUF"
FILE = "payload-F32.gguf"


def start_daemon(root: Path, hub: FakeHub) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    env = {
        **os.environ,
        "IMPETUS_HOME": str(root / "home"),
        "IMPETUS_SOCKET": str(root / "d.sock"),
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(root / "hf"),
        "IMPETUS_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen([sys.executable, "-m", "impetusd"], env=env)
    deadline = time.monotonic() + 30
    while True:
        try:
            Client(root / "d.sock").close()
            return proc, env
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def impetus_pull(env: dict[str, str]) -> float:
    shutil.rmtree(Path(env["HF_HOME"]), ignore_errors=True)
    subprocess.run([sys.executable, "-m", "impetusctl", "--no-autostart", "rm", REPO], env=env, capture_output=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "impetusctl", "--no-autostart", "--json", "pull", REPO], env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def hf_download(endpoint: str, cache: Path) -> float:
    from huggingface_hub import hf_hub_download

    shutil.rmtree(cache, ignore_errors=True)
    started = time.perf_counter()
    hf_hub_download(REPO, FILE, cache_dir=cache, endpoint=endpoint)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="imppull"))
    payload = write_tiny_llama(root / "tiny.gguf").read_bytes() + os.urandom(args.mb * 1024 * 1024)
    with FakeHub() as hub:
        hub.add_repo(REPO, {FILE: payload})
        daemon, env = start_daemon(root, hub)
        try:
            ours, theirs = [], []
            for _ in range(args.runs):  # interleaved
                ours.append(impetus_pull(env))
                theirs.append(hf_download(hub.url, root / "hf-direct"))
        finally:
            daemon.terminate()
            daemon.wait(30)
    mb = len(payload) / 1e6
    o, t = statistics.median(ours), statistics.median(theirs)
    print(
        json.dumps(
            {
                "file_mb": round(mb, 1),
                "runs": args.runs,
                "impetus_pull_s": round(o, 3),
                "impetus_mb_per_s": round(mb / o, 1),
                "hf_hub_download_s": round(t, 3),
                "hf_hub_download_mb_per_s": round(mb / t, 1),
                "ratio_throughput_impetus_vs_hf": round(t / o, 3),
                "note": "impetus time includes the CLI start, sha256 verification and registration",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
