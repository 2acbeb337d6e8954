"""Text to evaluate on (``warmstart eval``): a file, or the files of a directory matching globs,
joined into one token stream.

Unlike the training corpus (``sources.py``: split, cached, fingerprinted) this is read whole, in
sorted path order, so the same files always give the same stream.
"""

from __future__ import annotations

from pathlib import Path

from warmstart.errors import UsageError
from warmstart.files import refuse_special

EVAL_INCLUDE = ("*.py",)


def read_texts(data: Path, include: list[str] | tuple[str, ...] = ()) -> list[tuple[Path, str]]:
    """``[(file, text), ...]`` of a text file, or of the UTF-8 files under a directory matching ``include``
    (default ``*.py``; files that are not UTF-8 are skipped, a single named file must be)."""
    if refuse_special(data, "--data path") is None:  # a FIFO or a device is refused by name, never opened
        raise UsageError(f"--data {data} does not exist", fix="pass a text file or a directory")
    if data.is_file():
        files = [data]
    else:
        patterns = list(include) or list(EVAL_INCLUDE)
        files = sorted({p for pat in patterns for p in data.rglob(pat) if p.is_file()})  # FIFOs etc. skipped
        if not files:
            raise UsageError(f"--data {data} holds no files matching {', '.join(patterns)}",
                             fix="pass --include with a glob that matches, e.g. --include '*.txt'")
    out = []
    for f in files:
        raw = f.read_bytes()
        try:
            out.append((f, raw.decode("utf-8")))
        except UnicodeDecodeError:
            if len(files) == 1:
                raise UsageError(f"{f} is not UTF-8 text", fix="pass a text file") from None
    return out


def token_stream(tokenizer, texts: list[str], *, eos_id: int | None, max_tokens: int | None = None) -> list[int]:
    """The texts' token ids, documents joined with ``eos_id`` (when the model has one), cut at ``max_tokens``."""
    ids: list[int] = []
    for enc in tokenizer.encode_batch(texts, add_special_tokens=False):
        if ids and eos_id is not None:
            ids.append(eos_id)
        ids.extend(enc.ids)
        if max_tokens is not None and len(ids) >= max_tokens:
            break
    return ids[:max_tokens] if max_tokens is not None else ids


__all__ = ["EVAL_INCLUDE", "read_texts", "token_stream"]
