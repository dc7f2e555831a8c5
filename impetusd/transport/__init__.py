"""Step 2: the Unix socket. Accept connections (checking the peer's uid), keep
each connection's requests and replies (a bounded outbox per client), hand
requests to dispatch, and adopt a socket from launchd or systemd."""
