"""Requests to prompt tokens: chat rendered with the model's own template
(``tokenizer.chat_template`` in the GGUF) in a Jinja2 sandbox, the way Hugging Face
renders it, then tokenized by llama.cpp's tokenizer: in-process (vocab.py) where the
library is installed, else by llama-server (``/tokenize``)."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from impetusd.plugin_api import GenerateRequest, InvalidParams, template_inputs

from .server import LlamaServer
from .vocab import Vocab

log = logging.getLogger(__name__)

# Tokenized both ways when the in-process tokenizer is opened: it is used only if it agrees.
PROBE = "Hello  world!\n\tÉté 1234567 don't <|im_start|> 🙂 の\n\n  x"


class IgnoreGenerationTags(jinja2.ext.Extension):
    """Pass-through for Hugging Face's ``{% generation %}`` chat-template tag."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> list[jinja2.nodes.Node]:
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise(message: str) -> None:
    raise ValueError(message)


class Prompter:
    def __init__(self, server: LlamaServer, template: str | None, bos: str, eos: str, vocab: Vocab | None = None) -> None:
        self.server = server
        self.vocab: Vocab | None = None
        self.bos = bos
        self.eos = eos
        self.template = None
        self.source = template
        if template:
            env = ImmutableSandboxedEnvironment(
                loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True, extensions=[IgnoreGenerationTags, jinja2.ext.loopcontrols]
            )
            env.filters["tojson"] = _tojson
            self.template = env.from_string(template)
        if vocab is not None:
            self._adopt(vocab)

    def _adopt(self, vocab: Vocab) -> None:
        """Tokenize in-process from now on, if ``vocab`` gives llama-server's tokens for the
        probe and a rendered chat (else it is closed, with a warning)."""
        texts = [PROBE, self.bos + PROBE]
        if self.template is not None:
            try:
                texts.append(self.render([{"role": "user", "content": PROBE}]))
            except Exception:  # a template that refuses even this: the probe texts decide
                pass
        for text in texts:
            for special in (True, False):
                theirs = self.tokenize(text, special=special)
                ours = vocab.tokenize(text, add_special=special, parse_special=True)
                if ours != theirs:
                    log.warning("the in-process tokenizer differs from llama-server's on %r: prompts are tokenized by llama-server", text[:40])
                    vocab.close()
                    return
        self.vocab = vocab

    def close(self) -> None:
        if self.vocab is not None:
            self.vocab.close()

    def render(self, messages: list[dict[str, Any]], **extra: Any) -> str:
        assert self.template is not None
        return self.template.render(
            **extra,
            messages=messages,
            eos_token=self.eos,
            bos_token=self.bos,
            raise_exception=_raise,
            add_generation_prompt=True,
            strftime_now=lambda f: datetime.now().strftime(f),
        )

    def ids(self, req: GenerateRequest) -> list[int]:
        text, special = self.text(req)
        ids = self.tokenize(text, special=special)
        if req.kind == "complete":
            if not ids and self.bos:  # an empty prompt: start from the beginning of a text
                ids = self.tokenize(self.bos, special=False)
            if not ids:
                raise InvalidParams("Invalid params: prompt is empty", field="prompt")
        return ids

    def text(self, req: GenerateRequest) -> tuple[str, bool]:
        """The prompt as text, and whether the model's BOS is still to be added to it."""
        if req.kind == "complete":
            return (req.prompt or "") + req.prefix, True
        messages, extra = template_inputs(req, self.source, "llamacpp")
        if self.template is None:  # no template: a plain transcript, as the MLX backend does
            return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: " + req.prefix, True
        try:
            text = self.render(messages, **extra) + req.prefix
        except Exception as exc:  # the template's raise_exception, or a Jinja2 error
            raise InvalidParams(f"Invalid params: the model's chat template refused the messages ({exc})", field="messages") from exc
        # The template writes its own special tokens; the model's BOS only if it did not.
        return text, not (self.bos and text.startswith(self.bos))

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        """llama.cpp's tokens for ``text``; ``special``: add the model's BOS if it wants one.
        Special tokens written in the text (a template's, or a raw prompt's) are parsed as such."""
        if self.vocab is not None:
            return self.vocab.tokenize(text, add_special=special, parse_special=True)
        out = self.server.post("/tokenize", {"content": text, "add_special": special, "parse_special": True})
        return [int(t) for t in out["tokens"]]
