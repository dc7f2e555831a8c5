"""Per-load engine settings: ``models.load`` params over the configuration, checked before
anything loads (docs/design.md, Load options)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from impetusd.engine.backend import BackendSpec
from impetusd.engine.messages import LoadOptions, ModelSpec
from impetusd.protocol.errors import InvalidParams, UnsupportedParameter

if TYPE_CHECKING:
    from impetusd.config import Config


def load_options(
    cfg: Config,
    resolve: Callable[[str], ModelSpec],
    *,
    kv_type: Any = None,
    flash_attn: Any = None,
    draft: str | None = None,
    ngram: bool | None = None,
    ranks: int | None = None,
) -> LoadOptions:
    kv = kv_type or cfg.kv_cache_type
    fa = flash_attn or cfg.flash_attn
    if kv != "f16" and fa == "off":
        raise InvalidParams(f"a {kv} KV cache needs flash attention (flash_attn 'on' or 'auto')", field="flash_attn")
    if draft and ngram:
        raise InvalidParams("speculative decoding takes a draft model or n-grams, not both", field="draft")
    draft_spec = msgspec.structs.replace(resolve(draft), options=None) if draft else None
    return LoadOptions(kv_type=kv, flash_attn=fa, draft=draft_spec, ngram=bool(ngram), ranks=ranks or 1)


def for_backend(options: LoadOptions | None, backend: BackendSpec) -> LoadOptions | None:
    """The options ``backend`` honours; the others back at their defaults (so the
    configuration's ``kv_cache_type`` does not shrink the estimate of an MLX model)."""
    if options is None:
        return None
    caps = backend.capabilities
    return LoadOptions(
        kv_type=options.kv_type if "kv_type" in caps else "f16",
        flash_attn=options.flash_attn if "flash_attn" in caps else "auto",
        draft=options.draft if "speculative" in caps else None,
        ngram=options.ngram and "speculative" in caps,
        ranks=options.ranks if backend.check_ranks is not None else 1,
    )


def vocabulary(spec: ModelSpec, inspect: Callable[[Path], dict[str, Any]]) -> tuple[Any, Any]:
    meta = spec.metadata
    if "vocab_size" not in meta:  # registered before the reader reported it
        meta = inspect(Path(spec.path))
    return meta.get("tokenizer"), meta.get("vocab_size")


def check_options(spec: ModelSpec, backend: BackendSpec, explicit: bool, inspect: Callable[[Path], dict[str, Any]]) -> None:
    """Refuse what ``backend`` cannot do (only when asked per load: the configuration's
    defaults are for the backends that have them), and a draft model of another vocabulary."""
    options = spec.options
    if options is None:
        return
    wanted = {
        "kv_type": options.kv_type != "f16",
        "flash_attn": options.flash_attn != "auto",
        "speculative": options.draft is not None or options.ngram,
    }
    missing = [name for name, on in wanted.items() if on and name not in backend.capabilities]
    if options.ranks > 1 and backend.check_ranks is None:
        missing.append("ranks")
    if explicit and missing:
        raise UnsupportedParameter(f"the {backend.name} backend does not take {', '.join(missing)} at load", parameter=missing[0], backend=backend.name)
    if options.ranks > 1 and backend.check_ranks is not None:
        backend.check_ranks(spec, options.ranks)  # NoBackend naming why this model cannot be split so
    draft = options.draft
    if draft is None:
        return
    if draft.format != spec.format:
        raise InvalidParams(f"the draft model {draft.name} is {draft.format}; {spec.name} is {spec.format}", field="draft")
    ours, theirs = vocabulary(spec, inspect), vocabulary(draft, inspect)
    if None not in ours + theirs and ours != theirs:
        raise InvalidParams(
            f"the draft model {draft.name} has another vocabulary ({theirs[0]}, {theirs[1]} tokens) than {spec.name} ({ours[0]}, {ours[1]} tokens)",
            field="draft",
        )
