"""The llama.cpp backend's disk tier through real daemons and llama-server processes:
a ~1,000-token prefix reused from a slot is saved (llama-server's slot save), restored
after a daemon restart and after an unload, and files in the cache directory that Impetus did not sign are
deleted, never restored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import DaemonProcess

MODEL = "smollm2-135m"
PREFIX = " ".join(f"Rule {i} for the bakery desk: answer briefly and mention bakery item number {i * 7 % 13}." for i in range(52))


def ask(d: DaemonProcess, question: str) -> dict[str, Any]:
    messages = [{"role": "system", "content": PREFIX}, {"role": "user", "content": question}]
    with d.connect() as conn:
        reply = conn.call("chat", {"model": MODEL, "messages": messages, "max_tokens": 2, "temperature": 0})
    assert "result" in reply, reply
    return reply["result"]


def slot_files(home: Path) -> list[Path]:
    return sorted((home / "cache" / "prompts").glob("*-llamacpp/*.slot"))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("llama-disk")


@pytest.fixture(scope="module")
def cold(root: Path) -> dict[str, Any]:
    """A first daemon: the prefix cold, then warm from its slot (which saves it)."""
    d = DaemonProcess(root).start()
    try:
        first = ask(d, "Open today?")
        second = ask(d, "Do you sell rye?")
    finally:
        d.stop()
    assert first["usage"]["prompt_tokens"] >= 1000 and first["usage"]["cached_tokens"] < 50
    assert second["usage"]["cached_tokens"] >= second["usage"]["prompt_tokens"] - 12  # all but the question
    assert second["timings"]["ttft_ms"] < 0.5 * first["timings"]["ttft_ms"], (first["timings"], second["timings"])
    return first


@pytest.mark.model
def test_a_hot_prefix_is_saved_and_restored_after_a_restart(root: Path, cold: dict[str, Any]) -> None:
    [saved] = slot_files(root / "home")
    assert saved.stat().st_mode & 0o077 == 0 and (saved.parent / "index.json").is_file()
    d = DaemonProcess(root).start()
    try:
        after = ask(d, "Is there a cafe?")
    finally:
        d.stop()
    assert after["usage"]["cached_tokens"] >= after["usage"]["prompt_tokens"] - 12, after["usage"]
    assert after["timings"]["ttft_ms"] < 0.5 * cold["timings"]["ttft_ms"], (cold["timings"], after["timings"])


@pytest.mark.model
def test_the_prefix_is_restored_after_an_unload(root: Path, cold: dict[str, Any]) -> None:
    d = DaemonProcess(root).start()
    try:
        ask(d, "Is there a cafe?")
        with d.connect() as conn:
            assert "result" in conn.call("models.unload", {"model": MODEL})
        after = ask(d, "Do you deliver?")  # a new worker, a new llama-server
    finally:
        d.stop()
    assert after["usage"]["cached_tokens"] >= after["usage"]["prompt_tokens"] - 12, after["usage"]
    assert len(slot_files(root / "home")) == 1  # restored, not saved again


@pytest.mark.model
def test_corrupt_or_planted_slot_files_are_deleted(root: Path, cold: dict[str, Any]) -> None:
    home = root / "home"
    [written] = slot_files(home)
    size = written.stat().st_size
    written.write_bytes(written.read_bytes()[: size // 2] + b"\0" * (size - size // 2))  # same size, other bytes
    planted = written.parent / "planted.slot"
    planted.write_bytes(b"not a slot file")
    d = DaemonProcess(root).start()
    try:
        after = ask(d, "Do you bake cakes?")
    finally:
        d.stop()
    assert after["usage"]["cached_tokens"] < 50  # nothing restored: the prompt was prefilled
    assert not planted.exists() and not written.exists()
    log = d.log.read_text()
    assert "planted.slot (not written by this index)" in log
    assert "do not match what Impetus wrote" in log
