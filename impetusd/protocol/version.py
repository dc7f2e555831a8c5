"""The daemon's version, for clients that name it (the HTTP shim's fingerprints);
the same that ``daemon.info`` reports and ``impetusd.__version__`` holds."""

from __future__ import annotations

from impetusd import __version__

__all__ = ["__version__"]
