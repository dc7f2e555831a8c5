"""A request's sampling fields as llama-server's ``/completion`` options: llama.cpp's
own sampler chain (logit bias, penalties, top-k/p, min-p, temperature, seeded draw),
with every server default that Impetus's protocol does not have switched off."""

from __future__ import annotations

from typing import Any

from impetusd.plugin_api import GenerateRequest, GrammarFormat, InvalidParams, JsonObjectFormat, JsonSchemaFormat, UnsupportedParameter, format_dict, lark_for

RANDOM_SEED = -1  # llama-server: pick a random seed
LLGUIDANCE_HEADER = "%llguidance {}\n"  # how llama-server tells an llguidance grammar from GBNF


def options(req: GenerateRequest, n_vocab: int, window: int, llguidance: bool = False) -> dict[str, Any]:
    """``window``: the tokens the penalties look back over (the whole context);
    ``llguidance``: the binary's grammar sampler is llguidance (``constraint``)."""
    s = req.sampling
    bad = [t for t in s.logit_bias if t < 0 or t >= n_vocab]
    if bad:
        raise InvalidParams(f"Invalid params: logit_bias names token {bad[0]}, past the vocabulary ({n_vocab})", field="logit_bias")
    # llama-server reads the seed as a signed 32-bit number; any seed maps onto 0..2^31-1.
    seed = RANDOM_SEED if s.seed is None else s.seed & 0x7FFFFFFF
    return {
        "temperature": s.temperature,  # 0: greedy
        # 0: off. Greedy (temperature 0) picks the top token whatever top-k/p and min-p say;
        # top-k 1 says so to llama.cpp, whose later samplers then see one token instead of
        # the whole vocabulary (measured: ~3% of the decode rate on the bundled model).
        "top_k": 1 if s.temperature == 0 else s.top_k,
        "top_p": s.top_p,
        "min_p": s.min_p,
        "seed": seed,
        "stop": s.stop,
        # OpenAI's formula (count * frequency + presence), over the whole context.
        "presence_penalty": s.presence_penalty,
        "frequency_penalty": s.frequency_penalty,
        "repeat_penalty": 1.0,
        "repeat_last_n": window,
        "logit_bias": [[t, b] for t, b in s.logit_bias.items()],
        # llama-server's other samplers, off: Impetus's protocol has no field for them.
        "typical_p": 1.0,
        "xtc_probability": 0.0,
        "dry_multiplier": 0.0,
        "top_n_sigma": -1.0,
        "mirostat": 0,
        "n_probs": 0 if req.top_logprobs is None else max(req.top_logprobs, 1),
        "ignore_eos": False,
        **constraint(req, llguidance),
    }


def constraint(req: GenerateRequest, llguidance: bool = False) -> dict[str, Any]:
    """``format`` in llama-server's terms. Built with llguidance: every kind as the same
    llguidance grammar MLX's matcher runs (``lark_for``), so both engines enforce one
    grammar. Otherwise: a JSON schema (converted to GBNF by llama.cpp) or a GBNF grammar;
    regex and Lark are then not declared as capabilities of this backend, so the daemon
    refuses them before they get here."""
    fmt = req.format
    if fmt is None:
        return {}
    if llguidance:
        return {"grammar": LLGUIDANCE_HEADER + lark_for(fmt)}
    if isinstance(fmt, JsonObjectFormat):
        return {"json_schema": {"type": "object"}}
    if isinstance(fmt, JsonSchemaFormat):
        ignored = ignored_keyword(fmt.schema)
        if ignored is not None:
            raise UnsupportedParameter(
                f"the llama.cpp backend cannot enforce {ignored} (llama.cpp's schema converter would ignore it); use the MLX backend or drop it",
                param="format",
                backend="llamacpp",
            )
        return {"json_schema": fmt.schema}
    if isinstance(fmt, GrammarFormat) and fmt.syntax == "gbnf":
        return {"grammar": fmt.grammar}
    raise UnsupportedParameter(f"the llama.cpp backend cannot enforce {format_dict(fmt)['type']!r}", param="format", backend="llamacpp")


# What llama.cpp's JSON-schema-to-grammar converter leaves out without a word: a schema
# using any of it is refused by name rather than enforced in part (docs/structured.md).
IGNORED_KEYWORDS = frozenset(
    {
        "multipleOf",
        "uniqueItems",
        "not",
        "if",
        "then",
        "else",
        "patternProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "contains",
        "minContains",
        "maxContains",
        "dependentRequired",
        "dependentSchemas",
        "unevaluatedProperties",
        "unevaluatedItems",
    }
)
RANGE_KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")  # enforced on integers only
FORMATS = frozenset({"date", "time", "date-time", "uuid"})


def ignored_keyword(schema: Any, where: str = "#") -> str | None:
    """The first part of ``schema`` llama.cpp would not enforce, as ``keyword at path``."""
    if isinstance(schema, list):
        for i, item in enumerate(schema):
            found = ignored_keyword(item, f"{where}/{i}")
            if found:
                return found
        return None
    if not isinstance(schema, dict):
        return None
    for key in sorted(IGNORED_KEYWORDS & schema.keys()):
        return f"{key!r} at {where}"
    if any(k in schema for k in RANGE_KEYWORDS) and schema.get("type") != "integer":
        return f"a number range at {where} (llama.cpp bounds integers only)"
    if "format" in schema and schema.get("format") not in FORMATS:
        return f"format {schema.get('format')!r} at {where}"
    for key, value in schema.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            for name, sub in value.items():
                found = ignored_keyword(sub, f"{where}/{key}/{name}")
                if found:
                    return found
        elif key in ("items", "prefixItems", "anyOf", "oneOf", "allOf", "additionalProperties"):
            found = ignored_keyword(value, f"{where}/{key}")
            if found:
                return found
    return None
