"""Prompt-cache tiers on the bundled model: memory, disk across a daemon restart,
and a tampered cache file discarded instead of loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import DaemonProcess

MODEL = "smollm2-135m"
MLX = 'backend = {gguf = "mlx"}\n'  # the prompt-cache tiers here are the MLX backend's
SYSTEM = (
    "You are a careful assistant for a small bakery in a seaside town. Answer in one short sentence, "
    "mention bread when you can, never give prices, and be polite to every customer who writes to you."
)


def ask(conn, question: str) -> dict:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    reply = conn.call("chat", {"model": MODEL, "messages": messages, "max_tokens": 3, "temperature": 0})
    assert "result" in reply, reply
    return reply["result"]


def cache_files(home: Path) -> list[Path]:
    return sorted((home / "cache" / "prompts").glob("*/*.safetensors"))


def ask_once(root: Path, question: str) -> tuple[dict, DaemonProcess]:
    """One question to a daemon started for it (and stopped after) on ``root``'s home."""
    d = DaemonProcess(root, config=MLX).start()
    try:
        with d.connect() as conn:
            return ask(conn, question), d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pcache")


def test_a_shared_prefix_is_served_from_memory_and_written_to_disk(root: Path) -> None:
    d = DaemonProcess(root, config=MLX).start()
    try:
        with d.connect() as conn:
            first = ask(conn, "Do you sell rye?")
            second = ask(conn, "When do you open?")
    finally:
        d.stop()
    assert first["usage"]["cached_tokens"] == 0
    assert 0 < second["usage"]["cached_tokens"] < second["usage"]["prompt_tokens"]
    assert second["usage"]["cached_tokens"] >= 40  # at least the system prompt
    files = cache_files(d.home)
    assert len(files) == 1 and (files[0].parent / "index.json").is_file()
    assert (files[0].parent.parent / "key").stat().st_mode & 0o077 == 0


def test_the_disk_cache_is_used_after_a_restart(root: Path) -> None:
    after, _ = ask_once(root, "Is there a cafe?")
    assert after["usage"]["cached_tokens"] >= 40
    assert after["timings"]["prefill_tps"] > 0


def test_a_tampered_or_foreign_cache_file_is_discarded(root: Path) -> None:
    home = root / "home"
    [written] = cache_files(home)
    size = written.stat().st_size
    written.write_bytes(written.read_bytes()[: size // 2] + b"\0" * (size - size // 2))  # same size, other bytes
    stray = written.parent / "planted.safetensors"
    stray.write_bytes(b"not a cache")
    result, d = ask_once(root, "Do you bake cakes?")
    assert result["usage"]["cached_tokens"] == 0  # nothing trusted, all prefilled
    assert not stray.exists() and written.name not in {p.name for p in cache_files(home)}
    log = d.log.read_text()
    assert "planted.safetensors (not written by this index)" in log
    assert "do not match what Impetus wrote" in log
    assert len(cache_files(home)) == 1  # the fresh prefill was written again


def test_the_disk_tier_stays_within_its_budget(tmp_path: Path) -> None:
    """With room for about one file, a second cold prompt evicts the older one."""

    def cold(d: DaemonProcess, topic: str) -> None:
        messages = [{"role": "system", "content": f"You only talk about {topic}. Keep every answer very short and friendly."},
                    {"role": "user", "content": "Tell me something."}]
        with d.connect() as conn:
            assert "result" in conn.call("chat", {"model": MODEL, "messages": messages, "max_tokens": 2, "temperature": 0})

    d = DaemonProcess(tmp_path, config=MLX).start()
    try:
        cold(d, "boats")
    finally:
        d.stop()
    [first] = cache_files(d.home)
    budget = first.stat().st_size * 3 // 2  # the file's size depends on the weights' precision
    d = DaemonProcess(tmp_path, config=MLX + f"prompt_cache_disk_bytes = {budget}\n").start()
    try:
        cold(d, "trains")
    finally:
        d.stop()
    [kept] = cache_files(d.home)
    assert kept.name != first.name and kept.stat().st_size <= budget
