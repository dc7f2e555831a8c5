"""The stop-sequence scanner now lives in the daemon package, shared by every backend."""

from impetusd.stops import StopScanner

__all__ = ["StopScanner"]
