"""Wire protocol: JSON-RPC 2.0 envelopes and newline framing."""
