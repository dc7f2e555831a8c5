"""Write small random llama GGUF files with the ``gguf`` package (the writer llama.cpp uses)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def byte_level_vocab() -> list[str]:
    """The 256 byte-level BPE symbols (GPT-2's printable mapping of bytes)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(keep, chars))]


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write_tiny_llama(
    path: Path, qtype: str = "F32", *, hidden: int = 64, layers: int = 2, seed: int = 0, declared_layers: int | None = None, chat_template: str = CHATML
) -> Path:
    """``declared_layers``: a block count in the metadata other than the blocks written (a broken file)."""
    import gguf
    from gguf import GGMLQuantizationType as Q

    rng = np.random.default_rng(seed)
    tokens = byte_level_vocab() + ["Ġt", "he", "<|im_start|>", "<|im_end|>"]
    merges = ["Ġ t", "h e"]
    types = [1] * (len(tokens) - 2) + [3, 3]
    vocab, heads, kv_heads, ff = len(tokens), 4, 2, hidden * 2
    head_dim = hidden // heads

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-test-llama")
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_block_count(declared_layers or layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_file_type({"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7}[qtype])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types(types)
    w.add_bos_token_id(vocab - 2)
    w.add_eos_token_id(vocab - 1)
    w.add_add_bos_token(False)
    w.add_chat_template(chat_template)

    def matrix(name: str, rows: int, cols: int) -> None:
        data = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
        if qtype == "F32":
            w.add_tensor(name, data)
        elif qtype == "F16":
            w.add_tensor(name, data.astype(np.float16))
        else:
            qt = getattr(Q, qtype)
            w.add_tensor(name, gguf.quants.quantize(data, qt), raw_dtype=qt)

    def norm(name: str) -> None:
        w.add_tensor(name, np.ones(hidden, dtype=np.float32))

    matrix("token_embd.weight", vocab, hidden)
    for i in range(layers):
        norm(f"blk.{i}.attn_norm.weight")
        matrix(f"blk.{i}.attn_q.weight", heads * head_dim, hidden)
        matrix(f"blk.{i}.attn_k.weight", kv_heads * head_dim, hidden)
        matrix(f"blk.{i}.attn_v.weight", kv_heads * head_dim, hidden)
        matrix(f"blk.{i}.attn_output.weight", hidden, heads * head_dim)
        norm(f"blk.{i}.ffn_norm.weight")
        matrix(f"blk.{i}.ffn_gate.weight", ff, hidden)
        matrix(f"blk.{i}.ffn_up.weight", ff, hidden)
        matrix(f"blk.{i}.ffn_down.weight", hidden, ff)
    norm("output_norm.weight")
    matrix("output.weight", vocab, hidden)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# Real models' shapes, for benchmarks (bench/gpu.py): random weights at the size and layout that
# decide speed (bytes read per token, matrix sizes, KV cache per token).
SHAPES: dict[str, dict[str, int]] = {
    # Llama-3.1-8B: 32 layers, GQA 32/8, SwiGLU 14336, a 128,256-token vocabulary, untied output.
    "llama-8b": {"hidden": 4096, "layers": 32, "heads": 32, "kv_heads": 8, "ff": 14336, "vocab": 128256, "context": 131072},
    # SmolLM2-135M (the bundled model): 30 layers, GQA 9/3, 1536, a 49,152-token vocabulary.
    "smollm2-135m": {"hidden": 576, "layers": 30, "heads": 9, "kv_heads": 3, "ff": 1536, "vocab": 49152, "context": 8192, "tied": 1},
}
# Bytes per block of 32 weights, and the (scale, offset) the random blocks get: quantized
# values are random bytes, so every block decodes to weights of about ±0.06.
BLOCKS = {"Q8_0": (34, 0.0005, None), "Q4_0": (18, 0.008, None), "Q4_1": (20, 0.008, -0.06)}


def write_shaped_llama(path: Path, shape: str, qtype: str = "Q8_0", *, seed: int = 0) -> Path:
    """A llama GGUF of one of ``SHAPES`` with random weights in ``qtype`` (Q8_0, Q4_0, Q4_1 or F16).
    Fast at any size: blocks are written as random bytes with a fixed scale (no quantizing),
    and each layer's tensor of one name shares one buffer (the file still holds every layer)."""
    import gguf
    from gguf import GGMLQuantizationType as Q

    s = SHAPES[shape]
    hidden, layers, heads, kv_heads, ff, n_vocab = (s[k] for k in ("hidden", "layers", "heads", "kv_heads", "ff", "vocab"))
    head_dim = hidden // heads
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 256, size=64 << 20, dtype=np.uint8)
    specials = ["<|im_start|>", "<|im_end|>"]
    tokens = byte_level_vocab() + ["Ġt", "he"]
    tokens += [f"w{i}" for i in range(n_vocab - len(tokens) - len(specials))] + specials
    types = [1] * (len(tokens) - 2) + [3, 3]

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"random-{shape}-{qtype.lower()}")
    w.add_context_length(s["context"])
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(500000.0)
    w.add_file_type({"F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7}[qtype])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_merges(["Ġ t", "h e"])
    w.add_token_types(types)
    w.add_bos_token_id(n_vocab - 2)
    w.add_eos_token_id(n_vocab - 1)
    w.add_add_bos_token(False)
    w.add_chat_template(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    made: dict[tuple[int, int], np.ndarray] = {}

    def data(rows: int, cols: int) -> np.ndarray:
        if (rows, cols) in made:
            return made[(rows, cols)]
        if qtype == "F16":
            out = (np.resize(pool, rows * cols).view(np.int8).astype(np.float16) * np.float16(0.0005)).reshape(rows, cols)
        else:
            size, scale, offset = BLOCKS[qtype]
            blocks = np.resize(pool, rows * cols // 32 * size).reshape(-1, size)
            blocks[:, 0:2] = np.frombuffer(np.float16(scale).tobytes(), dtype=np.uint8)
            if offset is not None:
                blocks[:, 2:4] = np.frombuffer(np.float16(offset).tobytes(), dtype=np.uint8)
            out = blocks.reshape(rows, cols // 32 * size)
        made[(rows, cols)] = out
        return out

    def matrix(name: str, rows: int, cols: int) -> None:
        if qtype == "F16":
            w.add_tensor(name, data(rows, cols))
        else:
            w.add_tensor(name, data(rows, cols), raw_dtype=getattr(Q, qtype))

    ones = np.ones(hidden, dtype=np.float32)
    matrix("token_embd.weight", n_vocab, hidden)
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        matrix(f"blk.{i}.attn_q.weight", heads * head_dim, hidden)
        matrix(f"blk.{i}.attn_k.weight", kv_heads * head_dim, hidden)
        matrix(f"blk.{i}.attn_v.weight", kv_heads * head_dim, hidden)
        matrix(f"blk.{i}.attn_output.weight", hidden, heads * head_dim)
        w.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        matrix(f"blk.{i}.ffn_gate.weight", ff, hidden)
        matrix(f"blk.{i}.ffn_up.weight", ff, hidden)
        matrix(f"blk.{i}.ffn_down.weight", hidden, ff)
    w.add_tensor("output_norm.weight", ones)
    if not s.get("tied"):  # tied: llama.cpp reads the token embeddings as the output layer
        matrix("output.weight", n_vocab, hidden)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
