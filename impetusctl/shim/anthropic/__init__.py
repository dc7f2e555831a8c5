"""Anthropic's Messages API, ``/v1/messages`` (``wire``, ``translate``, ``stream``, ``routes``)."""
