"""Write tiny GGUF files the way llama.cpp's convert_hf_to_gguf.py does (for tests)."""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, quants

from warmstart.arch import spec_for
from warmstart.checkpoint.gguf.names import block_map, hf_to_gguf, permute_rows


def write_tiny_gguf(path, model, tokenizer=None, *, weight_type: str = "Q8_0", embed_type: str = "F16",
                    name: str = "tiny", extra_tensors: dict[str, np.ndarray] | None = None, pre: str = "default",
                    add_bos: bool = False) -> dict[str, np.ndarray]:
    """Write ``model`` (a warmstart CausalLM) as GGUF; return the HF-layout float32 values a
    reader must reproduce (quantise -> dequantise of each tensor, before llama.cpp's permutation)."""
    cfg = model.cfg
    spec = spec_for(cfg.family)
    w = GGUFWriter(str(path), spec.gguf_arch)
    w.add_name(name)
    w.add_block_count(cfg.num_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_heads)
    w.add_head_count_kv(cfg.num_kv_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    if tokenizer is not None:
        vocab = tokenizer.get_vocab()
        tokens = [None] * cfg.vocab_size
        for tok, idx in vocab.items():
            tokens[idx] = tok
        for i in range(cfg.vocab_size):  # pad the vocabulary up to the embedding rows
            if tokens[i] is None:
                tokens[i] = f"[PAD{i}]"
        import json

        merges = json.loads(tokenizer.to_str())["model"]["merges"]
        merges = [" ".join(m) if isinstance(m, list) else m for m in merges]
        specials = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
        types = [3 if t in specials else (5 if t.startswith("[PAD") else 1) for t in tokens]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_merges(merges)
        w.add_token_types(types)
        w.add_bos_token_id(cfg.bos_token_id if cfg.bos_token_id is not None else 0)
        w.add_eos_token_id(cfg.eos_token_id if cfg.eos_token_id is not None else 0)
        w.add_add_bos_token(add_bos)
    expected: dict[str, np.ndarray] = {}
    for hf_name, t in model.canonical_state_dict().items():
        arr = t.detach().float().numpy()
        gname = hf_to_gguf(hf_name, block_map(spec))
        if hf_name == "model.embed_tokens.weight":
            qtype = getattr(GGMLQuantizationType, embed_type)
        elif arr.ndim == 2:
            qtype = getattr(GGMLQuantizationType, weight_type)
        else:
            qtype = GGMLQuantizationType.F32
        if qtype == GGMLQuantizationType.F16:
            stored = arr.astype(np.float16)
            expected[hf_name] = stored.astype(np.float32)
        elif qtype == GGMLQuantizationType.F32:
            stored = arr.astype(np.float32)
            expected[hf_name] = stored
        else:
            stored = quants.quantize(arr, qtype)
            expected[hf_name] = quants.dequantize(stored, qtype).reshape(arr.shape)
        if spec.gguf_permute_qk and (".q_proj." in hf_name or ".k_proj." in hf_name):
            heads = cfg.num_heads if ".q_proj." in hf_name else cfg.num_kv_heads
            stored = permute_rows(stored, heads)
        if qtype in (GGMLQuantizationType.F16, GGMLQuantizationType.F32):
            w.add_tensor(gname, np.ascontiguousarray(stored))
        else:
            w.add_tensor(gname, np.ascontiguousarray(stored), raw_dtype=qtype)
    for gname, arr in (extra_tensors or {}).items():
        w.add_tensor(gname, np.ascontiguousarray(arr, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return expected
