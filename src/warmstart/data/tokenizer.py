"""Tokenizers for scratch runs: load a ``tokenizer.json`` or train a byte-level BPE on the corpus.

The trained tokenizer has one special token, ``<|endoftext|>``, used as BOS, EOS and PAD.
It is cached under the cache dir keyed by (corpus file fingerprint, vocab size), so a second
run on the same corpus reuses it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer

from warmstart.errors import UsageError
from warmstart.files import is_regular

EOT = "<|endoftext|>"
BPE_VERSION = "bytelevel-bpe-v1"


def tokenizer_hash(tok: Tokenizer) -> str:
    return hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()


def load_tokenizer(path: str | Path) -> Tokenizer:
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "tokenizer.json"
    if not is_regular(p, "tokenizer file"):  # a FIFO or a device is refused by name (WS003), never opened
        raise UsageError(f"tokenizer file '{path}' does not exist",
                         fix="pass --tokenizer PATH/tokenizer.json, or leave it out to train a BPE on the corpus",
                         path=path)
    try:
        return Tokenizer.from_file(str(p))
    except Exception as err:  # tokenizers raises a generic Exception
        raise UsageError(f"'{p}' is not a readable tokenizer.json ({err})",
                         fix="pass a Hugging Face tokenizers JSON file", path=p) from None


def eos_id(tok: Tokenizer) -> int:
    """The id appended after every document."""
    for name in (EOT, "</s>", "<|im_end|>", "<eos>", "<|end_of_text|>", "<|eot_id|>"):
        idx = tok.token_to_id(name)
        if idx is not None:
            return int(idx)
    raise UsageError("the tokenizer has no end-of-text token (looked for <|endoftext|>, </s>, <eos>, ...)",
                     fix="use a tokenizer with an EOS special token")


def vocab_size(tok: Tokenizer) -> int:
    return int(tok.get_vocab_size(with_added_tokens=True))


def train_bpe(texts: Iterable[str], vocab_size: int, *, length: int | None = None) -> Tokenizer:
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 300:
        raise UsageError(f"--vocab-size {vocab_size} is too small for a byte-level BPE",
                         fix="use at least 300 (256 bytes + merges + special tokens)")
    if vocab_size > 65535:
        raise UsageError(f"--vocab-size {vocab_size} is larger than 65535", fix="use a smaller vocabulary")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer, length=length)
    return tok
