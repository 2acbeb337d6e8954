"""Tokenizers for scratch runs: load a ``tokenizer.json`` or train a byte-level BPE on the corpus.

The trained tokenizer has one special token, ``<|endoftext|>``, used as BOS, EOS and PAD. It is
trained on the corpus's training documents, streamed (``corpus_tokenizer``), and cached under the
cache root keyed by (the corpus's file list as ``stat`` gives it, vocab size, split), so a second
run on the same corpus reuses it; any change to a file trains another.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Iterator

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


def corpus_tokenizer(corpus, log) -> Tokenizer:
    """A byte-level BPE trained on the corpus's training documents (every document when none is one),
    cached; ranks that train it at once wait for the first (the file's lock)."""
    from warmstart.data.progress import EntryLock

    s = corpus.settings
    key = hashlib.sha256(f"{corpus.fingerprint()}:{s.vocab_size}:{s.val_fraction}:{BPE_VERSION}".encode()).hexdigest()
    tdir = s.cache_root / "tokenizers"
    tpath = tdir / f"{key[:20]}.json"
    tdir.mkdir(parents=True, exist_ok=True)
    lock = EntryLock(tdir)
    lock.path = tdir / f".{key[:20]}.lock"
    lock.wait(True, log, tdir)
    try:
        if tpath.is_file() and not s.rebuild:
            tokenizer = load_tokenizer(tpath)
            log(f"tokenizer: cached byte-level BPE ({vocab_size(tokenizer)} tokens) {tpath}")
            return tokenizer
        return _train_cached(corpus, tpath, log)
    finally:
        lock.release()


def corpus_texts(corpus, train_only: bool, count: list[int]) -> Iterator[str]:
    """The texts of the corpus's documents (``train_only``: of its training documents), streamed, within
    the byte budget; ``count[0]`` counts the pieces given."""
    from warmstart.data.readers import Piece, ReadOptions, read_pieces, sniff
    from warmstart.data.sources import SKIP, SourceStats, doc_hash

    s = corpus.settings
    threshold, read = int(s.val_fraction * 2.0**64), 0
    for f in corpus.files:
        if f.kind is None:
            sniff(f, s.skip_bad_records)
        if f.kind == SKIP:
            continue
        left = None if s.max_corpus_bytes is None else s.max_corpus_bytes - read
        for piece in read_pieces(f, ReadOptions(s.text_field, s.skip_bad_records, lambda: left), SourceStats()):
            if not isinstance(piece, Piece):
                continue
            read += piece.nbytes
            if not train_only or doc_hash(piece.key) >= threshold:
                count[0] += 1
                yield piece.text
            if s.max_corpus_bytes is not None and read >= s.max_corpus_bytes:
                return


def _train_cached(corpus, tpath: Path, log) -> Tokenizer:
    import time

    from warmstart.checkpoint.write import atomic_write_text

    s = corpus.settings
    t0 = time.time()
    count = [0]
    tokenizer = train_bpe(corpus_texts(corpus, True, count), s.vocab_size)
    if not count[0]:  # no training document (a corpus held out whole): every document
        tokenizer = train_bpe(corpus_texts(corpus, False, count), s.vocab_size)
    atomic_write_text(tpath, tokenizer.to_str())
    log(f"tokenizer: trained byte-level BPE, {vocab_size(tokenizer)} tokens, in {time.time() - t0:.1f}s")
    return tokenizer
