"""The model store: a crash-safe registry, pulls from the Hugging Face Hub, imports."""
