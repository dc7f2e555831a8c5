"""The worker process: one backend, one model, speaking NDJSON JSON-RPC on stdin/stdout."""
