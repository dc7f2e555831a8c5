"""Step 3: a request becomes a call. The method table (filled through the
``impetus_register_methods`` hook), params decoded into each method's Struct,
errors mapped to the wire, and the daemon's methods by area: ``daemon.*``,
generation (``chat``, ``complete``), ``embed``, the store's ``models.*`` and
observation (``hardware.snapshot``, ``events.subscribe``)."""
