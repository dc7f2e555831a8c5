"""Beside the flow: what the daemon tells about itself and the machine. Typed
events (published to subscribers and to the ``impetus_event`` hook), counters
and histograms of requests, and the cgroup the daemon's memory lives in."""
