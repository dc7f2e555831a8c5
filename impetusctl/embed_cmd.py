"""``impetusctl embed MODEL TEXT…``: vectors from an embedding model."""

from __future__ import annotations

import math
import sys
from typing import Any

import click

from impetusd.protocol.api import EmbedResult

from . import render

SHOWN = 4  # components printed at each end of a vector in the readable form


def abbreviated(vector: list[float]) -> str:
    """``[0.0123, -0.0456, …, 0.0789]`` (the first and last few components)."""
    if len(vector) <= 2 * SHOWN:
        parts = [f"{v:.4f}" for v in vector]
    else:
        parts = [f"{v:.4f}" for v in vector[:SHOWN]] + ["…"] + [f"{v:.4f}" for v in vector[-SHOWN:]]
    return "[" + ", ".join(parts) + "]"


def show(result: EmbedResult, texts: list[str]) -> None:
    for text, vector in zip(texts, result.embeddings, strict=True):
        label = text if len(text) <= 40 else text[:37] + "..."
        norm = math.sqrt(sum(v * v for v in vector))
        click.echo(f"{label!r}: {len(vector)} dims, norm {norm:.3f} {abbreviated(vector)}")
    click.echo(f"{result.model} on {result.backend}: {result.usage.prompt_tokens} tokens", err=True)


def register(main: click.Group, state_type: Any) -> None:
    pass_state = click.make_pass_decorator(state_type)

    @main.command()
    @click.argument("model")
    @click.argument("texts", nargs=-1)
    @click.option("--json", "as_json", is_flag=True, help="Print the full result (every component) as JSON.")
    @click.option("--keep-alive", help="How long the model stays loaded afterwards (e.g. 5m, 0, -1).")
    @pass_state
    def embed(state: Any, model: str, texts: tuple[str, ...], as_json: bool, keep_alive: str | None) -> None:
        """Embed each TEXT with MODEL (one text per line from stdin when none is given).

        Prints each vector's size, norm and first and last components; --json
        prints every component.
        """
        inputs = list(texts)
        if not inputs and not sys.stdin.isatty():
            inputs = [line for line in sys.stdin.read().splitlines() if line.strip()]
        if not inputs:
            raise click.UsageError("give at least one TEXT (or lines on stdin)")
        params: dict[str, Any] = {"model": model, "input": inputs}
        if keep_alive is not None:
            params["keep_alive"] = keep_alive
        with state.client() as client:
            result = client.call("embed", params, type=EmbedResult)
        if as_json or state.json:
            render.json_out(result)
        else:
            show(result, inputs)
