"""A ring group of MLX processes on this machine: the worker is rank 0 and starts the
others (followers, ``python -m impetus_mlx.follower``) as its children.

mlx.distributed's ring backend reads ``MLX_RANK`` and ``MLX_HOSTFILE`` (a JSON file: one
list of ``host:port`` per rank, as mlx's own launcher writes it); each rank listens on its
loopback port and connects to its neighbours. A follower dies with the worker: on Linux
the kernel kills it when the worker exits (``PR_SET_PDEATHSIG``), and everywhere it exits
when its stdin (the worker's commands, and its lifeline) ends. A follower that exits
while the worker runs is fatal to the worker (``on_exit``): the ranks can no longer meet.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from impetusd.plugin_api import die_with

log = logging.getLogger(__name__)


def free_ports(n: int) -> list[int]:
    """``n`` loopback ports free now (the kernel's choice; held open together so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def share_cores(threads: int) -> None:
    """This process's OpenBLAS (when preloaded, impetusd/workers/blas.py) to ``threads`` threads."""
    try:
        ctypes.CDLL(None).openblas_set_num_threads(threads)
    except (AttributeError, OSError):  # no OpenBLAS here
        pass


def _pythonpath() -> str:
    """The follower imports impetus_mlx and impetusd from where this worker did."""
    api = sys.modules["impetusd.plugin_api"].__file__  # imported by this package already
    assert api is not None
    here = [str(Path(__file__).resolve().parent.parent), str(Path(api).resolve().parent.parent)]
    return os.pathsep.join(dict.fromkeys([*here, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))


class Group:
    """The followers of a group of ``size`` ranks; this process is rank 0."""

    def __init__(self, size: int, spec_json: bytes) -> None:
        self.size = size
        self.closing = False
        self.dir = tempfile.mkdtemp(prefix="impetus-mlx-ring-")  # 0700
        self.hostfile = os.path.join(self.dir, "hosts.json")
        with open(self.hostfile, "w") as fh:
            json.dump([[f"127.0.0.1:{port}"] for port in free_ports(size)], fh)
        threads = str(max(1, (os.cpu_count() or 1) // size))  # the ranks share the cores: no BLAS thread spins on another's
        share_cores(int(threads))
        env = {**os.environ, "MLX_HOSTFILE": self.hostfile, "PYTHONPATH": _pythonpath(), "OPENBLAS_NUM_THREADS": threads}
        self.followers: list[subprocess.Popen[bytes]] = []
        for rank in range(1, size):
            proc = subprocess.Popen(
                [sys.executable, "-m", "impetus_mlx.follower"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,  # stderr: the worker's (the daemon logs it)
                env={**env, "MLX_RANK": str(rank)},
                preexec_fn=die_with(os.getpid()),  # noqa: PLW1509 (started from the worker's main thread, before serving)
                close_fds=True,
            )
            self.followers.append(proc)
            self.send(proc, spec_json)
        os.environ["MLX_HOSTFILE"], os.environ["MLX_RANK"] = self.hostfile, "0"
        log.info("ring group of %d ranks: followers %s", size, [p.pid for p in self.followers])

    def pids(self) -> list[int]:
        return [p.pid for p in self.followers]

    def send(self, proc: subprocess.Popen[bytes], line: bytes) -> None:
        assert proc.stdin is not None
        proc.stdin.write(line + b"\n")
        proc.stdin.flush()

    def broadcast(self, line: bytes) -> None:
        """A command to every follower (a dead one is noticed by ``watch``)."""
        for proc in self.followers:
            try:
                self.send(proc, line)
            except OSError:
                pass

    def watch(self, on_exit: Callable[[str], None]) -> None:
        """Call ``on_exit(reason)`` from a thread when a follower exits while the group runs."""

        def wait(rank: int, proc: subprocess.Popen[bytes]) -> None:
            proc.wait()
            if not self.closing:
                on_exit(self._stopped(rank, proc))

        for rank, proc in enumerate(self.followers, start=1):
            threading.Thread(target=wait, args=(rank, proc), name=f"mlx-rank-{rank}-watch", daemon=True).start()

    def _stopped(self, rank: int, proc: subprocess.Popen[bytes]) -> str:
        code = proc.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        return f"MLX rank {rank} (pid {proc.pid}) of {self.size} stopped ({how}); the ring group cannot go on"

    def lost(self, within: float) -> str | None:
        """Why a follower stopped, if one has or does within ``within`` seconds (``watch``'s
        threads reap them): a collective that fails in rank 0 is most often a follower's
        death that rank 0 saw before its watcher did."""
        deadline = time.monotonic() + within
        while True:
            for rank, proc in enumerate(self.followers, start=1):
                if proc.returncode is not None:
                    return self._stopped(rank, proc)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    def close(self) -> None:
        self.closing = True
        for proc in self.followers:
            proc.kill()
            proc.wait()
