"""The stop-sequence scanner now lives in the daemon package, shared by every backend."""

from impetusd.plugin_api import StopScanner

__all__ = ["StopScanner"]
