"""The engine contract: what a backend plugin implements (``capabilities``), what it is handed
and returns (``messages``), and how it is registered (``backend``)."""
