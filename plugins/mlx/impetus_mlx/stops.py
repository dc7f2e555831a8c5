"""The stop-sequence scanner now lives in the daemon package, shared by every backend."""

from impetusd.plugin.stops import StopScanner

__all__ = ["StopScanner"]
