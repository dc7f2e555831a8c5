"""Helpers the daemon and plugins share: chat-template inputs, child processes, machine and
NVIDIA facts, signed files, stop sequences, structured-output grammars."""
