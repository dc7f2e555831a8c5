"""A follower rank of a split MLX model (``python -m impetus_mlx.follower``), started by
the worker (group.py): its stdin carries the model's spec, then one ``Command`` a line;
its end (the worker gone) ends this process at once, even mid-collective."""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading

import msgspec


def main() -> None:
    rank = os.environ.get("MLX_RANK", "?")
    fmt = f"%(asctime)s mlx-rank-{rank}[{os.getpid()}] %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=os.environ.get("IMPETUS_LOG_LEVEL", "INFO").upper(), format=fmt)
    lines: queue.Queue[bytes] = queue.Queue()

    def read() -> None:
        for line in sys.stdin.buffer:
            lines.put(line)
        os._exit(0)  # the worker is gone

    threading.Thread(target=read, name="lifeline", daemon=True).start()
    from impetusd.plugin_api import ModelSpec

    from .sharded import Command, Lockstep, join, run

    engine, group = join(msgspec.json.decode(lines.get(), type=ModelSpec))
    lockstep = Lockstep(group)
    decode = msgspec.json.Decoder(Command).decode
    while True:
        run(engine, lockstep, decode(lines.get()), lambda *_: None, lockstep.follow())


if __name__ == "__main__":
    main()
