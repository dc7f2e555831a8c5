"""CPU time per generated token of each process on the llama.cpp path: the daemon, the
worker and llama-server, while streamed chats run one after another through a daemon.

Prints one JSON object. Usage:
.venv/bin/python bench/cpu_per_token.py [--seconds 30] [--max-tokens 200] [--threads 2]

On a machine whose cores llama-server keeps busy, every millisecond the daemon and the worker
spend on a token is taken from it: this says how many there are, per process (user + system
CPU seconds from psutil, over the whole window, divided by the tokens generated).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_harness import Daemon  # noqa: E402
from llama_server import MODEL, ThroughImpetus  # noqa: E402

from impetusctl.client import Client  # noqa: E402


def cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from impetus_llamacpp.threads import THREADS_ENV

    daemon = Daemon()
    daemon.env[THREADS_ENV] = str(args.threads)
    with daemon, Client(daemon.socket, timeout=600) as client:
        client.call("models.load", {"model": MODEL, "keep_alive": -1})
        impetus = ThroughImpetus(daemon.socket)
        impetus.stream(-1, 4)  # warm-up, unmeasured
        assert daemon.proc is not None
        top = psutil.Process(daemon.proc.pid)
        kids = top.children(recursive=True)
        server = [k for k in kids if "llama-server" in k.name()]
        worker = [k for k in kids if k not in server and k.ppid() == top.pid]
        procs = {"daemon": top, "worker": worker[0], "llama_server": server[0]}
        before = {name: cpu_s(p) for name, p in procs.items()}
        load = os.getloadavg()[0]
        tokens = requests = 0
        started = time.monotonic()
        while time.monotonic() - started < args.seconds:
            tokens += int(impetus.stream(requests, args.max_tokens)["tokens"])
            requests += 1
        wall = time.monotonic() - started
        used = {name: cpu_s(p) - before[name] for name, p in procs.items()}
    print(
        json.dumps(
            {
                "requests": requests,
                "tokens": tokens,
                "wall_s": round(wall, 2),
                "cpu_ms_per_token": {name: round(s * 1000 / tokens, 3) for name, s in used.items()},
                "daemon_and_worker_vs_llama_server": round((used["daemon"] + used["worker"]) / used["llama_server"], 4),
                "loadavg_before": round(load, 2),
                "loadavg_after": round(os.getloadavg()[0], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
