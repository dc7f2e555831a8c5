"""Stop sequences over streamed text: emit what is safe, hold back a possible prefix.

Shared by the backends (MLX, llama.cpp) so stop handling is the same everywhere.
"""

from __future__ import annotations


class StopScanner:
    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.text = ""  # everything kept (final answer)
        self._sent = 0
        self.hit = False
        self.matched: str | None = None  # the stop sequence that ended the text

    def feed(self, piece: str) -> tuple[str, bool]:
        """Add decoded text; return (text safe to emit now, stop sequence hit)."""
        self.text += piece
        if not self.stops:
            out, self._sent = self.text[self._sent :], len(self.text)
            return out, False
        longest = max(len(s) for s in self.stops)
        start = max(0, self._sent - longest)
        found = [(i, s) for s in self.stops if (i := self.text.find(s, start)) >= 0]
        if found:
            cut, self.matched = min(found, key=lambda f: f[0])
            self.text = self.text[:cut]
            self.hit = True
            out, self._sent = self.text[self._sent :], len(self.text)
            return out, True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        safe = len(self.text) - hold
        out = self.text[self._sent : safe] if safe > self._sent else ""
        self._sent = max(self._sent, safe)
        return out, False

    def flush(self) -> str:
        out, self._sent = self.text[self._sent :], len(self.text)
        return out
