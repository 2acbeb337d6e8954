"""GGUF tokenizers: rebuild a ``tokenizers.Tokenizer`` from a GGUF vocabulary, and embed one in a GGUF.

Reading gives the tokenization llama.cpp gives for the file (``src/llama-vocab.cpp``; llama.cpp's own
``ggml-vocab-*.gguf`` test vectors are the check), with transformers' special tokens and BOS/EOS handling;
writing follows llama.cpp's ``convert_hf_to_gguf.py``. Kinds (``tokenizer.ggml.model``):

- ``"gpt2"``, byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM, ...): tokens and merges spelled in GPT-2's
  byte alphabet (user-defined tokens as raw text, matched whole), split as the llama.cpp type
  ``tokenizer.ggml.pre`` names (``pretok``);
- ``"llama"``, SentencePiece BPE (Llama 2, TinyLlama, Mistral, Gemma, Phi-3): "▁" for a space, ``<0xNN>``
  tokens for byte fallback, merges from the file or rebuilt from the token scores. Gemma's files
  (``general.architecture`` gemma, gemma2, gemma3) split at spaces with no prefix space, store runs
  of spaces as spaces, and rank merges by file order instead of score;
- ``"gemma4"`` (read only): Gemma 4's BPE over SentencePiece-spelled pieces.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from warmstart.arch.config import ModelConfig
from warmstart.checkpoint.gguf.parse import GGUFFile
from warmstart.checkpoint.gguf.pretok import build_pre_tokenizer, llama_cpp_pre_name, pre_tokenizer
from warmstart.checkpoint.gguf.vocab import check_built, check_vocab, checked_merges
from warmstart.errors import UnreadableError, UsageError, WarmstartError

# tokenizer.ggml.model -> what warmstart calls it
TOKENIZER_KINDS = {"gpt2": "byte-level BPE", "llama": "SentencePiece BPE with byte fallback",
                   "gemma4": "Gemma 4's BPE on SentencePiece pieces"}
GEMMA_ARCHITECTURES = ("gemma", "gemma2", "gemma3")  # SentencePiece files spelled the Gemma way
SPIECE = "\u2581"  # SentencePiece's space

# ------------------------------------------------------------------- reading

# llama.cpp token types (gguf.TokenType)
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_BYTE_TOKEN = re.compile(r"^<0x[0-9A-F]{2}>$")


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


def tokenizer_style(architecture: str | None, kind: Any) -> str | None:
    """How to build a file's tokenizer: "gpt2", "llama" or "gemma" (SentencePiece spelled Gemma's way), or
    None for a kind warmstart cannot build."""
    if kind == "llama" and architecture in GEMMA_ARCHITECTURES:
        return "gemma"
    return kind if kind in TOKENIZER_KINDS else None


def declared_tokenizer(md: dict, architecture: str | None) -> dict:
    """What a GGUF declares about its tokenizer (for ``inspect``), whether or not warmstart can build it."""
    kind = md.get("tokenizer.ggml.model")
    if kind is None:
        return {}
    tokens = md.get("tokenizer.ggml.tokens")
    keys = ("pre", "bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id", "add_bos_token",
            "add_eos_token", "add_space_prefix")
    out = {"kind": kind, "kind_name": TOKENIZER_KINDS.get(kind, "not supported"),
           "supported": tokenizer_style(architecture, kind) is not None,
           "tokens": len(tokens) if isinstance(tokens, (list, int)) else None}
    out.update({k: md[f"tokenizer.ggml.{k}"] for k in keys if f"tokenizer.ggml.{k}" in md})
    return out


def gguf_tokenizer(g: GGUFFile):
    """A ``tokenizers.Tokenizer`` equal (ids, specials) to transformers' tokenizer for the same GGUF.

    Returns None when the file has no tokenizer; raises UnreadableError for a tokenizer kind
    warmstart cannot build (``--tokenizer`` then supplies one).
    """
    md = g.metadata
    kind = md.get("tokenizer.ggml.model")
    if kind is None or not isinstance(md.get("tokenizer.ggml.tokens"), list):
        return None
    style = tokenizer_style(g.architecture, kind)
    if style is None:
        raise UnreadableError(
            f"the GGUF tokenizer is of type '{kind}'; warmstart builds "
            + " and ".join(f"{v} ('{k}')" for k, v in TOKENIZER_KINDS.items()) + " tokenizers",
            fix="pass the model's tokenizer.json with --tokenizer", path=g.path)
    path = Path(g.path)
    check_vocab(md, sentencepiece=style != "gpt2", path=path)
    try:
        if style == "gpt2":
            tk = _byte_level(md, path=path)
        else:
            tk = _gemma4(md, path=path) if style == "gemma4" else _sentencepiece(md, style, path=path)
        _add_file_tokens(tk, md, byte_level=style == "gpt2")
        _add_named_specials(tk, md, gemma=style == "gemma")
        _set_post_processor(tk, md, default_bos=kind == "llama")
    except WarmstartError:
        raise
    except Exception as err:  # noqa: BLE001 - tokenizers raises plain Exceptions; none may escape as WS999
        raise UnreadableError(f"the GGUF tokenizer cannot be built ({type(err).__name__}: {str(err)[:200]})",
                              fix="re-export the GGUF from the model's own tokenizer, or pass its tokenizer.json "
                              "with --tokenizer", path=path) from None
    check_built(tk, len(md["tokenizer.ggml.tokens"]), path=path)
    return tk


def _byte_level(md: dict, *, path: Path):
    """Byte-level BPE split as llama.cpp's ``tokenizer.ggml.pre`` type says (``pretok``)."""
    from tokenizers import Tokenizer, decoders, models

    # every token as stored, a later duplicate winning (llama.cpp's token_to_id); a token stored as raw text
    # (user-defined ones, convert_hf_to_gguf.py writes them so) is matched whole (_add_file_tokens)
    vocab = {tok: idx for idx, tok in enumerate(md["tokenizer.ggml.tokens"])}
    pre = pre_tokenizer(md.get("tokenizer.ggml.pre"), path=path)
    merges = checked_merges(md.get("tokenizer.ggml.merges", []), vocab, path=path)
    bpe = models.BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None, continuing_subword_prefix="",
                     end_of_word_suffix="", fuse_unk=False, byte_fallback=False, ignore_merges=pre.ignore_merges)
    tk = Tokenizer(bpe)
    tk.pre_tokenizer = build_pre_tokenizer(pre)
    tk.decoder = decoders.ByteLevel()
    return tk


def _gemma4(md: dict, *, path):
    """Gemma 4's BPE (``tokenizer.ggml.model = "gemma4"``, llama.cpp's gemma4 type): every space is "▁", the
    text is cut into runs of newlines and runs of anything else, and the file's merges run over raw UTF-8
    inside each, falling back to ``<0xNN>`` byte tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    if not isinstance(md.get("tokenizer.ggml.merges"), list):
        raise UnreadableError("the GGUF's gemma4 tokenizer has no merges", why="llama.cpp refuses it too",
                              fix="pass the model's tokenizer.json with --tokenizer", path=path)
    vocab = {tok: idx for idx, tok in enumerate(md["tokenizer.ggml.tokens"])}
    merges = checked_merges(md["tokenizer.ggml.merges"], vocab, path=path)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, fuse_unk=False, unk_token=None,
                              dropout=None))
    tk.normalizer = normalizers.Replace(" ", SPIECE)
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("[^\n]+|[\n]+"), behavior="isolated")
    tk.decoder = decoders.Sequence([decoders.Replace(SPIECE, " "), decoders.ByteFallback(), decoders.Fuse()])
    return tk


def _sentencepiece(md: dict, style: str, *, path):
    """SentencePiece BPE with byte fallback, in one of two spellings. Llama's: every space is "▁", and one
    more "▁" goes before the text (each stretch of it between special tokens, as llama.cpp does) when the
    file says ``add_space_prefix`` (the default), whether or not the text starts with a space. Gemma's:
    every space is "▁", the text split after each, no prefix."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    gemma = style == "gemma"
    tokens = list(md["tokenizer.ggml.tokens"])
    if gemma:  # runs of spaces are stored as spaces, but the text's spaces become "▁" before lookup
        tokens = [SPIECE * len(t) if " " in t and not t.strip() else t for t in tokens]
    tk = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=_spm_merges(md, tokens, gemma, path),
                              unk_token="<unk>" if gemma else None, fuse_unk=True, byte_fallback=True, dropout=None))
    prefix = not gemma and bool(md.get("tokenizer.ggml.add_space_prefix", True))
    if gemma:
        tk.normalizer = normalizers.Replace(" ", SPIECE)
        tk.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous", invert=False)
    else:  # (Metaspace's prepend would not add the "▁" before a text that starts with a space)
        tk.normalizer = normalizers.Sequence([normalizers.Prepend(SPIECE)] * prefix + [normalizers.Replace(" ", SPIECE)])
    steps = [decoders.Replace(SPIECE, " "), decoders.ByteFallback(), decoders.Fuse()]
    tk.decoder = decoders.Sequence(steps + ([decoders.Strip(content=" ", left=1, right=0)] if prefix else []))
    return tk


def _spm_merges(md: dict, tokens: list[str], gemma: bool, path) -> list[tuple[str, str]]:
    """The file's merges, else the ones its token order (Gemma: its scores do not follow its merge order)
    or its scores imply."""
    vocab = {t: i for i, t in enumerate(tokens)}
    if "tokenizer.ggml.merges" in md:
        return checked_merges(md["tokenizer.ggml.merges"], vocab, path=path)
    if gemma:
        return merges_from_scores(vocab, {t: -i for i, t in enumerate(tokens)})
    if isinstance(md.get("tokenizer.ggml.scores"), list):
        return merges_from_scores(vocab, dict(zip(tokens, md["tokenizer.ggml.scores"], strict=False)))
    raise UnreadableError("the GGUF SentencePiece tokenizer has neither merges nor token scores",
                          why="the merge order of a SentencePiece BPE vocabulary comes from one of them",
                          fix="pass the model's tokenizer.json with --tokenizer", path=path)


def merges_from_scores(vocab: dict[str, int], scores: dict[str, float]) -> list[tuple[str, str]]:
    """The BPE merges a SentencePiece vocabulary implies: every split of a token into two tokens, ranked by
    the token's score (best first; ties: shorter left piece, then shorter right piece, then token order)."""
    ranked: list[tuple[float, str, str]] = []
    for token, score in scores.items():
        pairs = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in vocab and token[i:] in vocab]
        pairs.sort(key=lambda p: (vocab[p[0]], vocab[p[1]]))
        ranked += [(score, left, right) for left, right in pairs]
    ranked.sort(key=lambda m: (m[0], len(m[1]), len(m[2])), reverse=True)
    return [(left, right) for _, left, right in ranked]


def _add_file_tokens(tk, md: dict, *, byte_level: bool) -> None:
    """Tokens the file marks as control become special tokens, user-defined ones plain added tokens, so that
    both are matched whole. (In a byte-level vocabulary a "control" token spelled outside the byte
    alphabet is a llama.cpp mislabel and is skipped, as transformers does.)"""
    from tokenizers import AddedToken

    tokens, types = md["tokenizer.ggml.tokens"], md.get("tokenizer.ggml.token_type") or []
    alphabet = set(_bytes_to_unicode().values()) if byte_level else None
    control = [AddedToken(t, normalized=False, special=True) for t, ty in zip(tokens, types, strict=False)
               if ty == _CONTROL and (alphabet is None or set(t) <= alphabet)]
    if control:
        tk.add_special_tokens(control)
    vocab = tk.get_vocab()
    user = [AddedToken(t, normalized=False, special=False) for t, ty in zip(tokens, types, strict=False)
            if ty == _USER_DEFINED and t in vocab]
    # Gemma's runs of spaces, stored as spaces and kept as "▁" runs in the vocabulary: matched whole in the
    # text (spaces already "▁"), longest first, before the merges, as llama.cpp matches user-defined tokens
    user += [AddedToken(SPIECE * len(t), normalized=True, special=False) for t, ty in zip(tokens, types, strict=False)
             if ty == _USER_DEFINED and t not in vocab and t and not t.strip(" ") and SPIECE * len(t) in vocab]
    if user:
        tk.add_tokens(user)


def _named_token(md: dict, key: str) -> tuple[str, int] | None:
    """(token, id) of ``tokenizer.ggml.<key>_token_id``, when it names a token of the vocabulary."""
    tokens, i = md["tokenizer.ggml.tokens"], md.get(f"tokenizer.ggml.{key}_token_id")
    return (tokens[i], i) if isinstance(i, int) and 0 <= i < len(tokens) else None


def _add_named_specials(tk, md: dict, *, gemma: bool) -> None:
    """BOS, EOS, unknown and padding tokens (and Gemma's ``<mask>``) are special tokens too."""
    from tokenizers import AddedToken

    named = [t[0] for t in map(lambda k: _named_token(md, k), ("bos", "eos", "unknown", "padding")) if t]
    vocab = tk.get_vocab()
    added = {a.content for a in tk.get_added_tokens_decoder().values()}
    new = [AddedToken(t, special=True) for t in dict.fromkeys(named + ["<mask>"] * gemma)
           if t in vocab and t not in added]
    if new:
        tk.add_special_tokens(new)


def _set_post_processor(tk, md: dict, *, default_bos: bool) -> None:
    """BOS before / EOS after each sequence as ``add_bos_token`` / ``add_eos_token`` say (a SentencePiece
    file that does not say adds BOS, as llama.cpp does). The template is given as its JSON state, not in
    the template string language, so that any token text (spaces, ':' or a leading '$') names itself."""
    from tokenizers import processors

    bos = _named_token(md, "bos") if md.get("tokenizer.ggml.add_bos_token", default_bos) else None
    eos = _named_token(md, "eos") if md.get("tokenizer.ggml.add_eos_token", False) else None
    if bos is None and eos is None:
        return

    def template(seq: str, type_id: int) -> list[dict]:
        def special(t):
            return [{"SpecialToken": {"id": t[0], "type_id": type_id}}] if t else []
        return special(bos) + [{"Sequence": {"id": seq, "type_id": type_id}}] + special(eos)

    specials = {t: {"id": t, "ids": [i], "tokens": [t]} for t, i in dict.fromkeys(t for t in (bos, eos) if t)}
    post = processors.TemplateProcessing(single="$A:0")
    post.__setstate__(json.dumps({"type": "TemplateProcessing", "single": template("A", 0),
                                  "pair": template("A", 0) + template("B", 1), "special_tokens": specials}).encode())
    tk.post_processor = post


# ------------------------------------------------------------------- writing

def tokenizer_kind(tokenizer) -> str | None:
    """The GGUF kind a ``tokenizers.Tokenizer`` is: "llama" (SentencePiece BPE: byte fallback), "gpt2"
    (byte-level BPE), or None (another model: WordPiece, Unigram, ...)."""
    from tokenizers import models

    if not isinstance(tokenizer.model, models.BPE):
        return None
    return "llama" if tokenizer.model.byte_fallback else "gpt2"


def _token_table(tokenizer, rows: int, kind: str, unk: str | None) -> tuple[list[str], list[int]]:
    """Every id's token and llama.cpp token type; ids without a token become unused ``[PADn]`` tokens."""
    rev = {i: t for t, i in tokenizer.get_vocab(with_added_tokens=True).items()}
    added = {int(i): a for i, a in tokenizer.get_added_tokens_decoder().items()}
    tokens, types = [], []
    for i in range(max(rows, max(rev) + 1 if rev else 0)):
        t = rev.get(i)
        tokens.append(t if t is not None else f"[PAD{i}]")
        if t is None:
            types.append(_UNUSED)
        elif i in added:
            types.append(_CONTROL if added[i].special else _USER_DEFINED)
            if kind == "llama" and not added[i].special and t and not t.strip(SPIECE):
                tokens[-1] = " " * len(t)  # a user-defined run of "▁" is stored as spaces (convert_hf_to_gguf.py)
        elif kind == "llama" and _BYTE_TOKEN.match(t):
            types.append(_BYTE)
        else:
            types.append(_UNKNOWN if t == unk else _NORMAL)
    return tokens, types


def _scores(tokens: list[str], merges: list[str]) -> list[float]:
    """SentencePiece scores that rank the merges as given: a token made by merge ``r`` scores ``-(r + 1)``,
    every other token 0."""
    made: dict[str, int] = {}
    for rank, merge in enumerate(merges):
        made.setdefault(merge.replace(" ", ""), rank)
    return [-(made[t] + 1.0) if t in made else 0.0 for t in tokens]


def _adds_around(tok_json: dict) -> tuple[int | None, int | None]:
    """The ids of the special tokens the post-processor puts before and after a single sequence."""
    post = tok_json.get("post_processor") or {}
    single = post.get("single") or [] if post.get("type") == "TemplateProcessing" else []
    ids = {k: v["ids"][0] for k, v in (post.get("special_tokens") or {}).items() if v.get("ids")}

    def special(piece: dict) -> int | None:
        return ids.get((piece.get("SpecialToken") or {}).get("id"))

    return (special(single[0]) if single else None), (special(single[-1]) if single else None)


def _prefix_space(tok_json: dict) -> bool:
    """Whether a SentencePiece tokenizer puts "▁" before the text (Metaspace prepend, or a Prepend normalizer)."""
    text = json.dumps([tok_json.get("pre_tokenizer"), tok_json.get("normalizer")])
    return bool(re.search(r'"prepend_scheme": "(first|always)"|"type": "Prepend"', text))


def add_tokenizer(writer, tokenizer, cfg: ModelConfig, vocab_rows: int, pre: str | None = None) -> None:
    """Embed a byte-level BPE (llama.cpp "gpt2") or SentencePiece BPE (llama.cpp "llama") ``tokenizers.Tokenizer``.
    ``pre``: the source GGUF's ``tokenizer.ggml.pre``, kept when the tokenizer splits text as it says."""
    tok_json = json.loads(tokenizer.to_str())
    model = tok_json.get("model") or {}
    kind = tokenizer_kind(tokenizer)
    if kind is None:
        raise UsageError(f"the tokenizer is a {model.get('type')} model; the GGUF exporter embeds byte-level BPE "
                         "and SentencePiece BPE (byte fallback) tokenizers only")
    tokens, types = _token_table(tokenizer, vocab_rows, kind, model.get("unk_token"))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    writer.add_tokenizer_model(kind)
    writer.add_tokenizer_pre(llama_cpp_pre_name(tokenizer, pre) if kind == "gpt2" else "default")  # SPM: no regex
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if kind == "llama":
        writer.add_token_scores(_scores(tokens, merges))
        writer.add_add_space_prefix(_prefix_space(tok_json))
    writer.add_token_merges(merges)
    ids = {"bos": cfg.bos_token_id, "eos": cfg.eos_token_id, "pad": cfg.pad_token_id,
           "unk": tokenizer.token_to_id(model["unk_token"]) if model.get("unk_token") else None}
    for key, val in ids.items():
        if val is not None:
            getattr(writer, f"add_{key}_token_id")(int(val))
    before, after = _adds_around(tok_json)
    writer.add_add_bos_token(before is not None and before == ids["bos"])
    writer.add_add_eos_token(after is not None and after == ids["eos"])


__all__ = ["GEMMA_ARCHITECTURES", "TOKENIZER_KINDS", "add_tokenizer", "declared_tokenizer",
           "gguf_tokenizer", "merges_from_scores", "tokenizer_kind", "tokenizer_style"]
