"""GGUF tokenizers: rebuild a ``tokenizers.Tokenizer`` from a GGUF vocabulary, and embed one in a GGUF.

Byte-level BPE (llama.cpp's ``tokenizer.ggml.model = "gpt2"``) in both directions: reading gives
ids equal to transformers' own GGUF tokenizer; writing follows llama.cpp's ``convert_hf_to_gguf.py``.
"""

from __future__ import annotations

import json

from warmstart.arch.config import ModelConfig
from warmstart.checkpoint.gguf.parse import GGUFFile
from warmstart.errors import UnreadableError, UsageError

# ------------------------------------------------------------------- reading

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT4O_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# ``tokenizer.ggml.pre`` -> the split regex its merges were learned with (same table as
# transformers' GGUF loader). Others ("smollm", "gpt2", "default", ...) use GPT-2's ByteLevel regex.
PRE_TOKENIZER_SPLITS = {
    **{k: _LLAMA3_SPLIT for k in ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
                                  "midm-2.0", "lfm2", "dbrx", "smaug-bpe")},
    **{k: _QWEN2_SPLIT for k in ("qwen2", "deepseek-r1-qwen", "megrez")},
    **{k: _GPT4O_SPLIT for k in ("gpt-4o", "llama4", "minimax-m2")},
}

_TOKEN_CONTROL, _TOKEN_USER_DEFINED = 3, 4


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def gguf_tokenizer(g: GGUFFile):
    """A ``tokenizers.Tokenizer`` equal (ids, specials) to transformers' tokenizer for the same GGUF.

    Byte-level BPE (``tokenizer.ggml.model == "gpt2"``) only; returns None when the file has no
    tokenizer, raises UnreadableError for a tokenizer model warmstart cannot build.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    md = g.metadata
    kind = md.get("tokenizer.ggml.model")
    tokens = md.get("tokenizer.ggml.tokens")
    if kind is None or not isinstance(tokens, list):
        return None
    if kind != "gpt2":
        raise UnreadableError(
            f"the GGUF tokenizer is of type '{kind}'; warmstart builds byte-level BPE ('gpt2') tokenizers only",
            fix="pass the model's tokenizer.json with --tokenizer", path=g.path)
    spelling = _bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab: dict[str, int] = {}
    for idx, tok in enumerate(tokens):
        if not set(tok) <= alphabet:  # a token stored as raw text: spell it in the byte alphabet
            tok = "".join(spelling[b] for b in tok.encode("utf-8"))
        vocab.setdefault(tok, idx)
    merges = [tuple(m.split(" ", 1)) for m in md.get("tokenizer.ggml.merges", [])]
    bpe = models.BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None, continuing_subword_prefix="",
                     end_of_word_suffix="", fuse_unk=False, byte_fallback=False)
    tk = Tokenizer(bpe)
    split = PRE_TOKENIZER_SPLITS.get(md.get("tokenizer.ggml.pre"))
    if split is not None:
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    types = md.get("tokenizer.ggml.token_type") or []
    control = [AddedToken(t, normalized=False, special=True)
               for t, ty in zip(tokens, types, strict=False) if ty == _TOKEN_CONTROL and set(t) <= alphabet]
    if control:
        tk.add_special_tokens(control)
    user = [AddedToken(t, normalized=False, special=False)
            for t, ty in zip(tokens, types, strict=False) if ty == _TOKEN_USER_DEFINED and t in vocab]
    if user:
        tk.add_tokens(user)
    bos_id = md.get("tokenizer.ggml.bos_token_id")
    if md.get("tokenizer.ggml.add_bos_token") and bos_id is not None and bos_id < len(tokens):
        bos = tokens[bos_id]
        tk.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    return tk


# ------------------------------------------------------------------- writing

def _pre_name(tok_json: dict) -> str:
    """tokenizer.ggml.pre: llama.cpp's name for the pre-tokenizer regex."""
    text = json.dumps(tok_json.get("pre_tokenizer") or {})
    if "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+" in text:
        return "qwen2"
    if "\\\\p{N}" in text and "Digits" in text:
        return "smollm"
    return "gpt2"


def add_tokenizer(writer, tokenizer, cfg: ModelConfig, vocab_rows: int, pre: str | None = None) -> None:
    """Embed a byte-level BPE ``tokenizers.Tokenizer`` as llama.cpp's "gpt2" tokenizer."""
    import gguf

    tok_json = json.loads(tokenizer.to_str())
    model = tok_json.get("model") or {}
    if model.get("type") != "BPE":
        raise UsageError(f"the tokenizer is a {model.get('type')} model; the GGUF exporter embeds "
                         "byte-level BPE tokenizers only")
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    rev = {i: t for t, i in vocab.items()}
    added = {int(i): a for i, a in tokenizer.get_added_tokens_decoder().items()}
    n = max(vocab_rows, max(rev) + 1 if rev else 0)
    tokens, types = [], []
    for i in range(n):
        if i in rev:
            tokens.append(rev[i])
            if i in added:
                types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
            else:
                types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    merges = model.get("merges") or []
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre or _pre_name(tok_json))
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    writer.add_token_merges(merges)
    if cfg.bos_token_id is not None:
        writer.add_bos_token_id(int(cfg.bos_token_id))
    if cfg.eos_token_id is not None:
        writer.add_eos_token_id(int(cfg.eos_token_id))
    if cfg.pad_token_id is not None:
        writer.add_pad_token_id(int(cfg.pad_token_id))
    writer.add_add_bos_token(False)


__all__ = ["PRE_TOKENIZER_SPLITS", "add_tokenizer", "gguf_tokenizer"]
