"""The GGUF vocabulary checked before a tokenizer is built from it, and the built tokenizer checked before use.

``tokenizers`` refuses a malformed vocabulary with a bare ``Exception`` (a merge naming a token that is not
there) or accepts it and tokenizes wrongly (token types or scores of another length, a SentencePiece vocabulary
without its byte tokens drops the characters it cannot spell), and a token string of megabytes makes
rebuilding SentencePiece merges from scores quadratic in its length. So, before anything is built:

- ``check_vocab``: the declared keys agree with each other: a non-empty token list of bounded strings; one
  token type (llama.cpp's 0-6) and one score per token; special ids (bos, eos, unknown, padding) that name a
  token; a SentencePiece vocabulary with all 256 byte tokens ``<0x00>``..``<0xFF>`` (its byte fallback);
  merges whenever the vocabulary's longer tokens need them (byte-level BPE always; SentencePiece when the key
  is there, else its scores rank the pieces);
- ``checked_merges``: each merge is two tokens of the vocabulary separated by a space (split at the first space
  after the first character, as llama.cpp does), and so is what they merge into;
- ``check_built``: the built tokenizer encodes a probe text (ASCII, accents, CJK, emoji, whitespace) into ids of
  the vocabulary and decodes it back unchanged: both kinds warmstart builds are lossless by construction.

A declared value that is wrong is DeclaredValueError (WS111, naming the key); a special id that names no token,
or a built tokenizer that loses text, is TokenizerError (WS104). See docs/errors.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from warmstart.errors import DeclaredValueError, TokenizerError

# The longest token of a real vocabulary is well under this (SmolLM2: 81 characters); a longer one is damage,
# and SentencePiece merges rebuilt from scores cost the square of a token's length.
MAX_TOKEN_CHARS = 1024
MAX_VOCAB_CHARS = 1 << 24  # all tokens together (a 262k-token vocabulary holds about 2M characters)
TOKEN_TYPES = range(0, 7)  # llama.cpp: undefined, normal, unknown, control, user-defined, unused, byte
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
SPECIAL_IDS = ("bos", "eos", "unknown", "padding")
PROBE = ("def f(x):\n    return x + 1  # ok\n\tTabs, \"quotes\" & <angles> {braces} [1, 2] 3.14 $5 100%\n"
         "Café naïve résumé — déjà vu. 中文字符 日本語 한국어 🚀👍🏽 ∑√≤\r\n  two  spaces   three")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(path: Path, key: str, found: str, expected: str) -> DeclaredValueError:
    return DeclaredValueError(
        f"{path.name} declares {key}{found}; expected {expected}",
        why="a tokenizer built from it would fail, or split text into other ids than the model was trained on",
        fix="re-export the GGUF from the model's own tokenizer, or pass its tokenizer.json with --tokenizer",
        path=path)


def check_vocab(md: dict, *, sentencepiece: bool, path: Path) -> None:
    """The declared vocabulary keys, before a tokenizer is built from them (see the module docstring)."""
    tokens = md.get("tokenizer.ggml.tokens")
    key = "tokenizer.ggml.tokens"
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise _bad(path, key, f" = {_shown(tokens)}", "a non-empty list of strings (one per token id)")
    longest = max(range(len(tokens)), key=lambda i: len(tokens[i]))
    if len(tokens[longest]) > MAX_TOKEN_CHARS:
        raise _bad(path, f"{key}[{longest}]", f", a token of {len(tokens[longest]):,} characters",
                   f"tokens of at most {MAX_TOKEN_CHARS} characters")
    total = sum(map(len, tokens))
    if total > MAX_VOCAB_CHARS:
        raise _bad(path, key, f" with {total:,} characters in all", f"at most {MAX_VOCAB_CHARS:,}")
    _check_per_token(md, len(tokens), path)
    _check_special_ids(md, len(tokens), path)
    if sentencepiece:
        present = set(tokens)
        missing = [b for b in BYTE_TOKENS if b not in present]
        if missing:
            raise _bad(path, key, f" without {len(missing)} of the 256 byte tokens ({', '.join(missing[:3])}"
                       f"{', ...' if len(missing) > 3 else ''})", "a SentencePiece vocabulary with every byte "
                       "token <0x00>..<0xFF>: its byte fallback spells any character the pieces do not")
    merges = md.get("tokenizer.ggml.merges")
    needed = not sentencepiece or merges is not None  # SentencePiece without merges ranks its pieces by score
    if needed and not merges and any(len(t) > 1 for t in _normal(md, tokens)):
        raise _bad(path, "tokenizer.ggml.merges", " = " + _shown(merges), "the merges that build the "
                   "vocabulary's longer tokens (without them none of those is ever produced)")


def _normal(md: dict, tokens: list[str]) -> list[str]:
    """The tokens BPE merges produce: the normal ones (every token when no types are declared)."""
    types = md.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    return [t for t, ty in zip(tokens, types, strict=True) if ty in (0, 1)]


def _check_per_token(md: dict, n: int, path: Path) -> None:
    """token_type and scores: one entry per token; the types llama.cpp defines."""
    for name in ("token_type", "scores"):
        key = f"tokenizer.ggml.{name}"
        value = md.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or len(value) != n:
            size = len(value) if isinstance(value, list) else None
            raise _bad(path, key, f" with {size} entries" if size is not None else f" = {_shown(value)}",
                       f"one entry per token ({n} tokens)")
    types = md.get("tokenizer.ggml.token_type") or []
    wrong = next((i for i, ty in enumerate(types) if isinstance(ty, bool) or ty not in TOKEN_TYPES), None)
    if wrong is not None:
        raise _bad(path, f"tokenizer.ggml.token_type[{wrong}]", f" = {_shown(types[wrong])}",
                   "a llama.cpp token type 0-6 (normal 1, unknown 2, control 3, user-defined 4, unused 5, byte 6)")


def _check_special_ids(md: dict, n: int, path: Path) -> None:
    for name in SPECIAL_IDS:
        key = f"tokenizer.ggml.{name}_token_id"
        value = md.get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < n):
            raise TokenizerError(
                f"{path.name} declares {key} = {_shown(value)}, but the vocabulary has {n} tokens (ids 0-{n - 1})",
                why="a special token id that names no token cannot be encoded or decoded",
                fix="correct the id (or re-export the GGUF from the model's own tokenizer), or pass its "
                "tokenizer.json with --tokenizer", path=path)


def checked_merges(merges: Any, vocab: dict[str, int], *, path: Path) -> list[tuple[str, str]]:
    """``tokenizer.ggml.merges`` as (left, right) pairs: split at the first space after the first character
    (llama.cpp's reading, so a piece may start with a space), both pieces and their join in ``vocab``."""
    key = "tokenizer.ggml.merges"
    if not isinstance(merges, list):
        raise _bad(path, key, f" = {_shown(merges)}", "a list of strings 'LEFT RIGHT'")
    out = []
    for i, merge in enumerate(merges):
        cut = merge.find(" ", 1) if isinstance(merge, str) else -1
        left, right = (merge[:cut], merge[cut + 1:]) if cut > 0 else ("", "")
        if not left or not right:
            raise _bad(path, f"{key}[{i}]", f" = {_shown(merge)}", "two tokens separated by one space ('LEFT RIGHT')")
        outside = next((t for t in (left, right, left + right) if t not in vocab), None)
        if outside is not None:
            raise _bad(path, f"{key}[{i}]", f" = {_shown(merge)}, which needs {_shown(outside)}, a token the "
                       "vocabulary does not have", "merges of two tokens of tokenizer.ggml.tokens into a third")
        out.append((left, right))
    return out


def check_built(tokenizer, n_tokens: int, *, path: Path) -> None:
    """The built tokenizer turns the probe text into ids below ``n_tokens`` and back into the same text."""
    try:
        ids = tokenizer.encode(PROBE, add_special_tokens=False).ids
        back = tokenizer.decode(ids, skip_special_tokens=False)
    except Exception as err:  # noqa: BLE001 - tokenizers raises plain Exceptions
        back, ids = f"an error ({type(err).__name__}: {str(err)[:120]})", []
    outside = [i for i in ids if not 0 <= i < n_tokens]
    if back != PROBE or outside:
        lost = f"ids {outside[:5]} outside the vocabulary" if outside else _difference(PROBE, back)
        raise TokenizerError(
            f"the tokenizer built from {path.name}'s vocabulary does not reproduce text: {lost}",
            why="byte-level BPE and SentencePiece with byte fallback spell every text exactly; one that does not "
            "would feed the model other tokens than it was trained on",
            fix="re-export the GGUF from the model's own tokenizer, or pass its tokenizer.json with --tokenizer",
            path=path)


def _difference(want: str, got: str) -> str:
    at = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
    return f"{_shown(want[max(0, at - 10):at + 20])} comes back as {_shown(got[max(0, at - 10):at + 20])}"


__all__ = ["MAX_TOKEN_CHARS", "MAX_VOCAB_CHARS", "check_built", "check_vocab", "checked_merges"]
