"""Ollama's native API, ``/api/*`` (``wire``, ``translate``, ``stream``, ``routes``)."""
