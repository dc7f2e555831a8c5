"""The browser dashboard: its page and the routes it calls (``wire``, ``relay``, ``routes``)."""
