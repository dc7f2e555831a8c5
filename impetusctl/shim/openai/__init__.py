"""OpenAI's API: chat and text completions, embeddings, models (``wire``, ``translate``, ``stream``, ``routes``)."""
