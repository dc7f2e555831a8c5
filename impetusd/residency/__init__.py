"""Step 4: which models are in memory. Resolve a name to a model, admit a
request, load it (choose a backend, estimate memory, evict idle models within
the budget), keep-alive and unload, restart backoff and the circuit breaker
after crashes, spare workers, thermal backoff, and the retry after an
allocation failure. A request holds a ``lease`` on its model while it runs."""
