"""Step 1 of the flow, and the last: bytes on a pipe or socket become typed messages.

Framing (one JSON message per line, capped), JSON-RPC 2.0 envelopes, the one
``Peer`` that keeps a connection's ids, pending calls and cancellations, every
wire error (one class each) and the params/results of every method. Clients,
the daemon and workers all speak through it. It imports nothing else of the daemon.
"""
