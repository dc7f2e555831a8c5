"""How the llama.cpp plugin hands a format to llama-server: as the llguidance grammar MLX's
matcher runs when the binary was built with llguidance, as llama.cpp's own JSON schema /
GBNF otherwise (then refusing what llama.cpp's converter would drop)."""

from __future__ import annotations

import importlib.metadata
import os
import sys
import sysconfig
from pathlib import Path

import pytest
from impetus_llamacpp import binary
from impetus_llamacpp.sampling import LLGUIDANCE_HEADER, constraint
from llguidance import LLMatcher

from impetusd.plugin_api import GenerateRequest, UnsupportedParameter, lark_for
from impetusd.protocol.api import GrammarFormat, JsonObjectFormat, JsonSchemaFormat, Message, RegexFormat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from schemas import SCHEMAS  # noqa: E402

FORMATS = [
    JsonObjectFormat(),
    JsonSchemaFormat(schema=SCHEMAS["nested"]),
    JsonSchemaFormat(schema=SCHEMAS["ref"]),
    RegexFormat(pattern="[A-Z]{3}/[0-9]{2}"),
    GrammarFormat(syntax="lark", grammar='start: "n=" /[0-9]{1,3}/'),
    GrammarFormat(syntax="gbnf", grammar='root ::= ("yes" | "no") "!"'),
]


def request(fmt: object) -> GenerateRequest:
    return GenerateRequest(kind="chat", messages=[Message(role="user", content="hi")], format=fmt)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: type(f).__name__)
def test_every_format_becomes_one_valid_llguidance_lark_text(fmt: object) -> None:
    body = constraint(request(fmt), llguidance=True)
    assert list(body) == ["grammar"] and body["grammar"].startswith(LLGUIDANCE_HEADER)
    lark = body["grammar"][len(LLGUIDANCE_HEADER) :]
    assert lark == lark_for(fmt)  # type: ignore[arg-type]
    is_error, messages = LLMatcher.validate_grammar_with_warnings(LLMatcher.grammar_from_lark(lark))
    assert not is_error, messages


def test_a_schema_keeps_the_compact_json_options_mlx_uses() -> None:
    lark = lark_for(JsonSchemaFormat(schema=SCHEMAS["nested"]))
    assert lark.startswith("start: %json ")
    assert '"whitespace_flexible": false' in lark and '"item_separator": ", "' in lark


@pytest.mark.parametrize("name", ["number_range", "multiple_of", "email"])
def test_without_llguidance_what_the_converter_drops_is_refused_and_with_it_enforced(name: str) -> None:
    fmt = JsonSchemaFormat(schema=SCHEMAS[name])
    with pytest.raises(UnsupportedParameter) as refused:
        constraint(request(fmt), llguidance=False)
    assert refused.value.fields["param"] == "format"
    assert constraint(request(fmt), llguidance=True)["grammar"].startswith(LLGUIDANCE_HEADER)


def test_setup_built_llama_server_with_the_installed_llguidance() -> None:
    """scripts/setup links llguidance in wherever this Python has a shared libpython (not
    on macOS); doctor and models.loaded then name it."""
    shared = bool(sysconfig.get_config_var("Py_ENABLE_SHARED")) and sys.platform != "darwin"
    if not shared or os.environ.get("IMPETUS_LLAMA_LLGUIDANCE") == "0" or binary.BINARY_ENV in os.environ:
        pytest.skip("this setup builds llama-server with llama.cpp's own grammar sampler")
    found = binary.find()
    assert found.llguidance == importlib.metadata.version("llguidance")
    assert binary.declared_llguidance()
    assert (Path(found.path).parent / "libllguidance.so").is_file()
