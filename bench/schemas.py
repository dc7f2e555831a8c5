"""JSON schemas for structured output: the validity set (bench/structured.py and
tests/test_structured.py) and the 20-property nested schema the speed is measured on.

Each string is bounded (maxLength) so that a small model at temperature 0.7 finishes
inside a few dozen tokens; what is checked is that every output validates."""

from __future__ import annotations

from typing import Any

S = {"type": "string", "maxLength": 8}


def obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props) if required is None else required, "additionalProperties": False}


SCHEMAS: dict[str, dict[str, Any]] = {
    "flat": obj({"name": S, "age": {"type": "integer"}}),
    "bool": obj({"ok": {"type": "boolean"}}),
    "enum": obj({"color": {"enum": ["red", "green", "blue"]}}),
    "const": obj({"kind": {"const": "point"}, "x": {"type": "integer"}}),
    "int_range": obj({"n": {"type": "integer", "minimum": 1, "maximum": 9}}),
    "number_range": obj({"t": {"type": "number", "minimum": -10, "maximum": 10}}),
    "exclusive": obj({"p": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 5}}),
    "pattern": obj({"code": {"type": "string", "pattern": "^[A-Z]{3}[0-9]{2}$"}}),
    "date": obj({"day": {"type": "string", "format": "date"}}),
    "email": obj({"mail": {"type": "string", "format": "email", "maxLength": 24}}),
    "uuid": obj({"id": {"type": "string", "format": "uuid"}}),
    "string_len": obj({"w": {"type": "string", "minLength": 2, "maxLength": 4}}),
    "array_bounds": obj({"xs": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "minItems": 1, "maxItems": 3}}),
    "array_of_objects": obj({"pts": {"type": "array", "items": obj({"x": {"type": "integer", "minimum": 0, "maximum": 9}}), "maxItems": 2}}),
    "tuple": obj({"pair": {"type": "array", "prefixItems": [{"type": "integer"}, S], "items": False}}),
    "nested": obj({"a": obj({"b": obj({"c": {"type": "integer", "minimum": 0, "maximum": 99}})})}),
    "optional": obj({"name": S, "nick": S}, required=["name"]),
    "nullable": obj({"v": {"type": ["integer", "null"]}}),
    "any_of": obj({"v": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9}, S]}}),
    "one_of_objects": obj({"shape": {"anyOf": [obj({"r": {"type": "integer"}}), obj({"w": {"type": "integer"}, "h": {"type": "integer"}})]}}),
    "ref": {
        "$defs": {"pt": obj({"x": {"type": "integer", "minimum": 0, "maximum": 9}, "y": {"type": "integer", "minimum": 0, "maximum": 9}})},
        **obj({"start": {"$ref": "#/$defs/pt"}, "end": {"$ref": "#/$defs/pt"}}),
    },
    "top_array": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "minItems": 2, "maxItems": 3},
    "top_enum": {"enum": ["yes", "no"]},
    "mixed": obj(
        {
            "id": {"type": "integer", "minimum": 1},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
            "meta": obj({"ok": {"type": "boolean"}}),
        }
    ),
    "multiple_of": obj({"m": {"type": "integer", "multipleOf": 5, "minimum": 0, "maximum": 50}}),
    "time": obj({"at": {"type": "string", "format": "time"}}),
}

# 20 properties over three levels: the schema the constrained decode speed is measured on
BIG: dict[str, Any] = obj(
    {
        "id": {"type": "integer", "minimum": 0, "maximum": 999},
        "name": S,
        "active": {"type": "boolean"},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "kind": {"enum": ["a", "b", "c"]},
        "owner": obj({"first": S, "last": S, "age": {"type": "integer", "minimum": 0, "maximum": 120}}),
        "place": obj({"city": S, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}, "geo": obj({"lat": {"type": "number"}, "lon": {"type": "number"}})}),
        "tags": {"type": "array", "items": S, "maxItems": 2},
        "size": {"type": "integer", "minimum": 1, "maximum": 9},
        "note": S,
        "rank": {"type": "integer", "minimum": 1, "maximum": 5},
        "code": {"type": "string", "pattern": "^[A-Z]{2}$"},
    }
)  # 12 top-level properties, 8 nested (owner 3, place 3, geo 2): 20 in all
