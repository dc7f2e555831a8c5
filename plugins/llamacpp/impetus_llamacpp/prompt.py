"""Requests to prompt tokens with llama.cpp's tokenizer; chat rendered with the
model's own template (``tokenizer.chat_template`` in the GGUF), in a Jinja2 sandbox."""

from __future__ import annotations

from typing import Any

from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from impetusd.plugin_api import GenerateRequest, InvalidParams


class Prompter:
    def __init__(self, llm: Llama) -> None:
        self.llm = llm
        meta = llm.metadata
        self.add_bos = meta.get("tokenizer.ggml.add_bos_token", "false") == "true"
        self.bos = self._text(llm.token_bos())
        template = meta.get("tokenizer.chat_template")
        self.formatter = Jinja2ChatFormatter(template, eos_token=self._text(llm.token_eos()), bos_token=self.bos) if template else None

    def _text(self, token: int) -> str:
        return self.llm.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""

    def ids(self, req: GenerateRequest) -> list[int]:
        if req.kind == "complete":
            ids = self.tokenize(req.prompt or "", bos=self.add_bos)
            if not ids and self.llm.token_bos() >= 0:
                ids = [self.llm.token_bos()]  # an empty prompt: start from the beginning of a text
            if not ids:
                raise InvalidParams("Invalid params: prompt is empty", field="prompt")
            return ids
        messages: list[Any] = [{"role": m.role, "content": m.content} for m in req.messages or []]  # llama_cpp's TypedDicts per role
        if self.formatter is None:  # no template: a plain transcript, as the MLX backend does
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
            return self.tokenize(text, bos=self.add_bos)
        try:
            text = self.formatter(messages=messages).prompt
        except Exception as exc:  # the template's raise_exception, or a Jinja2 error
            raise InvalidParams(f"Invalid params: the model's chat template refused the messages ({exc})", field="messages") from exc
        # The template writes its own special tokens; add BOS only if the model wants one and it did not.
        bos = self.add_bos and not (self.bos and text.startswith(self.bos))
        return self.tokenize(text, bos=bos)

    def tokenize(self, text: str, *, bos: bool) -> list[int]:
        # Special tokens written in the text (a template's, or a raw prompt's) are parsed as such.
        return self.llm.tokenize(text.encode("utf-8"), add_bos=bos, special=True)
