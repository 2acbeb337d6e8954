"""Write tiny GGUF files the way llama.cpp's convert_hf_to_gguf.py does (for tests), with a byte-level
BPE tokenizer (from a ``tokenizers.Tokenizer``) or a SentencePiece one (``spm_vocab``)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, quants

from warmstart.arch import spec_for
from warmstart.checkpoint.gguf.names import block_map, hf_to_gguf, permute_rows


def write_tiny_gguf(path, model, tokenizer=None, *, weight_type: str = "Q8_0", embed_type: str = "F16",
                    name: str = "tiny", extra_tensors: dict[str, np.ndarray] | None = None, pre: str = "gpt-2",
                    add_bos: bool = False, spm: SpmVocab | None = None, spm_flags: dict | None = None,
                    arch: str | None = None) -> dict[str, np.ndarray]:
    """Write ``model`` (a warmstart CausalLM) as GGUF; return the HF-layout float32 values a
    reader must reproduce (quantise -> dequantise of each tensor, before llama.cpp's permutation and
    norm shift). ``spm`` embeds a SentencePiece tokenizer instead (``spm_flags``: add_bos, add_eos,
    add_space_prefix, merges); ``arch`` overrides general.architecture (a relabelled file)."""
    cfg = model.cfg
    spec = spec_for(cfg.family)
    w = GGUFWriter(str(path), arch or spec.gguf_arch)
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
    for key, val in spec.gguf_keys(cfg).items():
        w.add_uint32(f"{arch or spec.gguf_arch}.{key}", val)
    if spm is not None:
        add_spm_tokenizer(w, spm.padded(cfg.vocab_size), **(spm_flags or {}))
    if tokenizer is not None:
        vocab = tokenizer.get_vocab()
        tokens = [None] * cfg.vocab_size
        for tok, idx in vocab.items():
            tokens[idx] = tok
        for i in range(cfg.vocab_size):  # pad the vocabulary up to the embedding rows
            if tokens[i] is None:
                tokens[i] = f"[PAD{i}]"
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
        if spec.gguf_norm_shift and hf_name.endswith("norm.weight"):  # llama.cpp stores Gemma's norms as 1 + w
            stored = stored + np.float32(spec.gguf_norm_shift)
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


# ------------------------------------------------------------ SentencePiece

@dataclass
class SpmVocab:
    """A SentencePiece BPE vocabulary as llama.cpp stores it (tokens, scores, token types, special ids)."""

    tokens: list[str]
    scores: list[float]
    types: list[int]
    specials: dict[str, int]  # bos / eos / unk / pad -> id

    def padded(self, rows: int) -> SpmVocab:
        extra = range(len(self.tokens), rows)
        return SpmVocab(self.tokens + [f"[PAD{i}]" for i in extra], self.scores + [-1000.0] * len(extra),
                        self.types + [5] * len(extra), self.specials)


LLAMA_SPECIALS = [("<unk>", 2), ("<s>", 3), ("</s>", 3)]
GEMMA_SPECIALS = [("<pad>", 3), ("<eos>", 3), ("<bos>", 3), ("<unk>", 3), ("<mask>", 3), ("[multimodal]", 4),
                  ("<start_of_turn>", 3), ("<end_of_turn>", 3), ("\n", 4), ("\n\n", 4), ("  ", 4), ("   ", 4)]


def spm_vocab(texts: list[str], pieces: int = 220, *, gemma: bool = False, scrambled: bool = True) -> SpmVocab:
    """Learn a small SentencePiece-style BPE vocabulary from ``texts``: special tokens, the 256 byte-fallback
    tokens ``<0xNN>``, the merged pieces in merge order, then the single characters (only the commonest, so
    that accents, CJK and emoji fall back to bytes). Llama's spelling puts "▁" before words, Gemma's too
    (its spaces are "▁" inside the text); Llama's scores rank the pieces, Gemma's do not (``scrambled``; the
    real Gemma 3 file's scores do follow its order)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if gemma:
        tok.normalizer = normalizers.Replace(" ", "\u2581")
        tok.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_next")
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=pieces, limit_alphabet=60, show_progress=False))
    model = json.loads(tok.to_str())["model"]
    merged = list(dict.fromkeys("".join(m) if isinstance(m, list) else m.replace(" ", "") for m in model["merges"]))
    chars = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]) if t not in set(merged)]
    specials = GEMMA_SPECIALS if gemma else LLAMA_SPECIALS
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    fixed = [t for t, _ in specials] + byte_tokens
    learned = [t for t in merged + chars if t not in set(fixed)]
    tokens = fixed + learned
    types = [ty for _, ty in specials] + [6] * 256 + [1] * len(learned)
    if gemma:
        scores = [-1000.0] * len(fixed) + [-float((7919 * i) % 997 if scrambled else i) for i in range(len(learned))]
        ids = {"bos": 2, "eos": 1, "unk": 3, "pad": 0}
    else:
        scores = [0.0] * len(fixed) + [-float(i) for i in range(len(learned))]
        ids = {"bos": 1, "eos": 2, "unk": 0}
    return SpmVocab(tokens, scores, types, ids)


def add_spm_tokenizer(w, vocab: SpmVocab, *, add_bos: bool | None = None, add_eos: bool | None = None,
                      add_space_prefix: bool | None = None, merges: list[str] | None = None,
                      model: str = "llama") -> None:
    """The tokenizer keys llama.cpp writes for a SentencePiece vocabulary (a flag left None is not written;
    ``model`` relabels tokenizer.ggml.model, e.g. as a kind warmstart does not build)."""
    w.add_tokenizer_model(model)
    w.add_tokenizer_pre("default")
    w.add_token_list(vocab.tokens)
    w.add_token_scores(vocab.scores)
    w.add_token_types(vocab.types)
    for key, idx in vocab.specials.items():
        getattr(w, f"add_{key}_token_id")(idx)
    for flag, value in (("bos_token", add_bos), ("eos_token", add_eos), ("space_prefix", add_space_prefix)):
        if value is not None:
            getattr(w, f"add_add_{flag}")(value)
    if merges is not None:
        w.add_token_merges(merges)
