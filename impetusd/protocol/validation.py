"""What a msgspec validation error is about: the path of the field it names, as
the daemon reports it in ``InvalidParams`` and the HTTP shim in each API's error."""

from __future__ import annotations


def field_of(message: str) -> str | None:
    """msgspec says ``... - at `$.messages[0].role```; return ``messages[0].role``."""
    marker = "at `$"
    if marker not in message:
        if "missing required field `" in message:
            return message.split("missing required field `", 1)[1].split("`", 1)[0]
        if "unknown field `" in message:
            return message.split("unknown field `", 1)[1].split("`", 1)[0]
        return None
    path = message.rsplit(marker, 1)[1].split("`", 1)[0].lstrip(".")
    if "missing required field `" in message:
        name = message.split("missing required field `", 1)[1].split("`", 1)[0]
        path = f"{path}.{name}" if path else name
    elif "unknown field `" in message:
        name = message.split("unknown field `", 1)[1].split("`", 1)[0]
        path = f"{path}.{name}" if path else name
    return path or None
