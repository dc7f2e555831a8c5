"""Which of llama-server's slots a request goes to (its ``id_slot``).

Each slot keeps the KV cache of the last prompt it ran. The engine tracks the token ids
each slot holds and sends a request to the idle slot that serves the most of its prompt
for the least it throws away: score ``2·reused − held`` (``reused``: the common prefix
with what the slot holds; ``held``: what it holds), ties to the least recently used. A
conversation's next turn goes back to its slot; an unrelated prompt goes to an empty
slot, or the one holding the least, rather than evicting a long prefix (llama-server's
own choice, without ``id_slot``, falls back to the least recently used slot whenever
the prompt is less than 10% alike).
"""

from __future__ import annotations

import time

from impetusd.plugin_api import SignedFiles

common_prefix = SignedFiles.common_prefix


class Slots:
    def __init__(self, count: int) -> None:
        self.held: list[list[int]] = [[] for _ in range(count)]
        self.busy = [False] * count
        self.used = [0.0] * count

    def choose(self, ids: list[int]) -> tuple[int, int] | None:
        """An idle slot for ``ids`` and how many leading tokens it holds; None if all are busy."""
        best: tuple[int, float, int, int] | None = None  # score, -used, slot, reused
        for slot, held in enumerate(self.held):
            if self.busy[slot]:
                continue
            reused = min(common_prefix(held, ids), max(len(ids) - 1, 0))
            key = (2 * reused - len(held), -self.used[slot], slot, reused)
            if best is None or key[:2] > best[:2]:
                best = key
        if best is None:
            return None
        self.busy[best[2]] = True
        return best[2], best[3]

    def release(self, slot: int, held: list[int]) -> None:
        self.held[slot] = held
        self.busy[slot] = False
        self.used[slot] = time.monotonic()
