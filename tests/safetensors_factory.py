"""Write small model folders: a Hugging Face llama (``safetensors`` package), an
mlx-lm folder (mlx-lm's own quantize and save functions) and raw hostile files."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

HIDDEN, LAYERS, HEADS, KV_HEADS, FF, VOCAB = 64, 2, 4, 2, 128, 96
TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"


def llama_config(**extra: Any) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS, "intermediate_size": FF, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "rms_norm_eps": 1e-5, "vocab_size": VOCAB,
        "max_position_embeddings": 2048, "tie_word_embeddings": False, **extra,
    }


def llama_shapes() -> dict[str, tuple[int, ...]]:
    """Hugging Face llama tensor names and shapes for the tiny config."""
    kv = HIDDEN // HEADS * KV_HEADS
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,), "lm_head.weight": (VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes |= {
            p + "self_attn.q_proj.weight": (HIDDEN, HIDDEN), p + "self_attn.k_proj.weight": (kv, HIDDEN),
            p + "self_attn.v_proj.weight": (kv, HIDDEN), p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
            p + "mlp.gate_proj.weight": (FF, HIDDEN), p + "mlp.up_proj.weight": (FF, HIDDEN),
            p + "mlp.down_proj.weight": (HIDDEN, FF),
            p + "input_layernorm.weight": (HIDDEN,), p + "post_attention_layernorm.weight": (HIDDEN,),
        }
    return shapes


def write_tokenizer(folder: Path, *, template_file: bool) -> None:
    """A tiny word-level tokenizer saved by transformers (as mlx-lm's save does)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(VOCAB - 2)} | {"<unk>": VOCAB - 2, "</s>": VOCAB - 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")
    fast.chat_template = TEMPLATE
    fast.save_pretrained(folder)
    jinja = folder / "chat_template.jinja"
    tok_config_path = folder / "tokenizer_config.json"
    tok_config = json.loads(tok_config_path.read_text())
    if template_file and not jinja.exists():
        jinja.write_text(tok_config.pop("chat_template"))
    elif not template_file and jinja.exists():
        tok_config["chat_template"] = jinja.read_text()
        jinja.unlink()
    tok_config_path.write_text(json.dumps(tok_config))


def write_hf_llama(folder: Path, *, shards: int = 1, seed: int = 0, tokenizer: bool = True) -> dict[str, tuple[str, tuple[int, ...]]]:
    """A transformers-style folder: F16 matrices, F32 norms. Returns name -> (dtype, shape)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        name: rng.standard_normal(shape).astype(np.float32 if len(shape) == 1 else np.float16)
        for name, shape in llama_shapes().items()
    }
    names = sorted(arrays)
    if shards == 1:
        save_file(arrays, str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for s in range(shards):
            file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: arrays[n] for n in names[s::shards]}
            save_file(part, str(folder / file), metadata={"format": "pt"})
            weight_map |= {n: file for n in part}
        index = {"metadata": {"total_size": sum(a.nbytes for a in arrays.values())}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps(llama_config(torch_dtype="float16")))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": VOCAB - 1}))
    if tokenizer:
        write_tokenizer(folder, template_file=False)
    return {n: ("F32" if a.dtype == np.float32 else "F16", a.shape) for n, a in arrays.items()}


def write_mlx_llama(folder: Path, *, bits: int | None = 4, group_size: int = 32, seed: int = 0) -> tuple[int, dict[str, Any]]:
    """An mlx-lm folder written by mlx-lm: a tiny llama, quantized with ``quantize_model``
    (lm_head at 8 bits, the rest at ``bits``) unless ``bits`` is None, saved with
    ``save_model``/``save_config``. Returns (float parameter count, config written)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama
    from mlx_lm.utils import quantize_model, save_config, save_model

    mx.random.seed(seed)
    config = llama_config()
    args = llama.ModelArgs(**{k: v for k, v in config.items() if k != "architectures"})
    model = llama.Model(args)
    mx.eval(model.parameters())
    float_params = sum(v.size for _, v in tree_flatten(model.parameters()))
    if bits is not None:
        def predicate(path: str, module: Any) -> bool | dict[str, Any]:
            return {"group_size": group_size, "bits": 8} if path.endswith("lm_head") else True

        model, config = quantize_model(model, config, group_size, bits, quant_predicate=predicate)
    save_model(folder, model)
    save_config(config, config_path=folder / "config.json")
    write_tokenizer(folder, template_file=True)
    return float_params, config


def raw_safetensors(path: Path, header: dict[str, Any] | bytes, data: bytes, *, length: int | None = None) -> Path:
    """A file with exactly the header and data given (and, optionally, a lying length)."""
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body) if length is None else length) + body + data)
    return path
