"""Corpus reading, BPE, packing, the document split, the token cache and its fingerprint."""

from __future__ import annotations

import json
import os
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from warmstart.data import BatchSampler, build_dataset, load_tokenizer, resolve_files, tokenizer_hash
from warmstart.data.dataset import _doc_hash
from warmstart.errors import EmptyCorpusError, UsageError

KW = dict(vocab_size=400, seq_len=32)


def test_pack_split_and_eos(corpus, cache):
    ds = build_dataset([str(corpus)], cache_dir=cache, **KW)
    tok, eos = ds.tokenizer, ds.eos_id
    assert tok.id_to_token(eos) == "<|endoftext|>"
    assert ds.train.dtype == np.uint16 and ds.train.memmapped  # shards of the cache, memory-mapped
    # Every document is in exactly one split, tokenized and followed by one EOS.
    files = sorted(p for p in corpus.rglob("*.py"))
    val_keys = [p.relative_to(corpus).as_posix() for p in files]
    n_eos = int((np.asarray(ds.train) == eos).sum() + (np.asarray(ds.val) == eos).sum())
    assert n_eos == len(files)
    assert ds.meta["train_docs"] + ds.meta["val_docs"] == len(files)
    assert ds.meta["val_docs"] >= 2 and len(ds.val) >= 33
    # Reassemble: decoding the docs of each split gives back the original texts.
    all_text = {p.relative_to(corpus).as_posix(): p.read_text() for p in files}
    val_docs = [tok.decode(seg.tolist()) for seg in np.split(np.asarray(ds.val), np.where(np.asarray(ds.val) == eos)[0] + 1) if len(seg) > 1]
    for d in val_docs:
        assert d in all_text.values()
    assert len(val_keys) == len(files)
    # Windows: seq_len+1 tokens at stride seq_len.
    w = ds.train_windows(np.array([0, 1]))
    assert w.shape == (2, 33)
    assert (w[0, -1] == w[1, 0]) and np.array_equal(w[0], np.asarray(ds.train[:33]))
    assert ds.n_train_windows == (len(ds.train) - 1) // 32


def test_split_is_by_document_hash_and_deterministic(corpus, cache, tmp_path):
    a = build_dataset([str(corpus)], cache_dir=cache, **KW)
    b = build_dataset([str(corpus)], cache_dir=tmp_path / "other-cache", **KW)
    assert np.array_equal(np.asarray(a.train), np.asarray(b.train))
    assert np.array_equal(np.asarray(a.val), np.asarray(b.val))
    assert a.fingerprint == b.fingerprint
    # The val documents are the ones with the smallest key hashes (2% + top-up to >= 2 docs).
    keys = sorted((p.relative_to(corpus).as_posix() for p in corpus.rglob("*.py")), key=_doc_hash)
    assert a.meta["val_docs"] == 2
    texts = {k: (corpus / k).read_text() for k in keys}
    val_text = a.tokenizer.decode(np.asarray(a.val).tolist())
    assert texts[keys[0]][:200] in val_text and texts[keys[1]][:200] in val_text


def test_cache_hit_and_fingerprint(corpus, cache):
    logs = []
    a = build_dataset([str(corpus)], cache_dir=cache, log=logs.append, **KW)
    logs.clear()
    b = build_dataset([str(corpus)], cache_dir=cache, log=logs.append, **KW)
    assert any("cache hit" in s for s in logs) and not any("trained" in s for s in logs)
    assert b.fingerprint == a.fingerprint and b.cache_path == a.cache_path
    # settings change -> new entry
    c = build_dataset([str(corpus)], cache_dir=cache, vocab_size=400, seq_len=48)
    assert c.fingerprint != a.fingerprint
    # a file changes (size and mtime) -> new fingerprint, new tokenizer
    f = corpus / "heapq.py"
    f.write_text(f.read_text() + "\n# changed\n")
    os.utime(f, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    d = build_dataset([str(corpus)], cache_dir=cache, **KW)
    assert d.fingerprint != a.fingerprint
    # another tokenizer -> new fingerprint
    tok_path = cache / "tok.json"
    a.tokenizer.save(str(tok_path))
    e = build_dataset([str(corpus)], cache_dir=cache, tokenizer_path=str(tok_path), **KW)
    assert tokenizer_hash(e.tokenizer) == tokenizer_hash(a.tokenizer)
    assert e.fingerprint != d.fingerprint  # same files as d, other tokenizer


def test_prepared_cache_is_a_data_source(corpus, cache):
    a = build_dataset([str(corpus)], cache_dir=cache, **KW)
    b = build_dataset([str(a.cache_path)], **KW)
    assert b.fingerprint == a.fingerprint
    assert np.array_equal(np.asarray(a.train), np.asarray(b.train))
    other = load_tokenizer(a.cache_path / "tokenizer.json")
    other.add_special_tokens(["<|extra|>"])
    with pytest.raises(UsageError, match="different tokenizer"):
        build_dataset([str(a.cache_path)], tokenizer=other, **KW)


def test_binary_empty_undecodable_skipped_and_counted(corpus, cache):
    (corpus / "blob.py").write_bytes(b"\x7fELF\x00\x01\x02" * 100)
    (corpus / "empty.py").write_text("")
    (corpus / "blank.py").write_text("  \n\n")
    (corpus / "latin1.py").write_bytes("caf\xe9 = 1\n".encode("latin-1"))
    ds = build_dataset([str(corpus)], cache_dir=cache, **KW)
    st = ds.meta["stats"]
    assert st["skipped_binary"] == 1 and st["skipped_empty"] == 2 and st["skipped_undecodable"] == 1
    assert "skipped" in ds.summary()


def test_empty_corpus_raises(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "a.py").write_bytes(b"\x00\x01\x02")
    (d / "b.py").write_text("")
    with pytest.raises(EmptyCorpusError) as ei:
        build_dataset([str(d)], cache_dir=tmp_path / "cache", **KW)
    assert ei.value.code == "WS202" and "1 binary" in str(ei.value) and "1 empty" in str(ei.value)
    with pytest.raises(EmptyCorpusError, match="no files matched"):
        build_dataset([str(d)], include=["*.rs"], cache_dir=tmp_path / "cache", **KW)


def test_too_small_corpus(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "a.py").write_text("x = 1\n")
    (d / "b.py").write_text("y = 2\n")
    with pytest.raises(EmptyCorpusError, match="too small"):
        build_dataset([str(d)], cache_dir=tmp_path / "cache", vocab_size=300, seq_len=64)


def test_jsonl_and_text_field(tmp_path, corpus):
    p = tmp_path / "d.jsonl"
    with open(p, "w") as fh:
        for f in sorted(corpus.rglob("*.py")):
            fh.write(json.dumps({"content": f.read_text(), "id": f.name}) + "\n")
    ds = build_dataset([str(p)], text_field="content", cache_dir=tmp_path / "cache", **KW)
    assert ds.meta["train_docs"] + ds.meta["val_docs"] == len(list(corpus.rglob("*.py")))
    with pytest.raises(UsageError, match="no field 'text'"):
        build_dataset([str(p)], cache_dir=tmp_path / "cache", **KW)


def test_single_text_file_is_split_into_parts(tmp_path, corpus):
    p = tmp_path / "big.txt"
    p.write_text("".join(f.read_text() for f in sorted(corpus.rglob("*.py"))) * 3)
    ds = build_dataset([str(p)], cache_dir=tmp_path / "cache", **KW)
    assert ds.meta["train_docs"] >= 2 and ds.meta["val_docs"] >= 1


def test_default_corpus_is_the_stdlib_without_tests():
    files, names = resolve_files(None)
    root = Path(sysconfig.get_paths()["stdlib"])
    assert names[0].startswith("python-stdlib:")
    assert len(files) > 100
    for f in files:
        parts = Path(f.key).parts
        assert f.key.endswith(".py")
        assert not {"test", "tests", "idle_test", "site-packages"} & set(parts)
        assert f.path.is_relative_to(root)


def test_sampler_cursor_resumes_exactly():
    a = BatchSampler(10, seed=3)
    seen = np.concatenate([a.next_indices(4) for _ in range(5)])  # 20 = two epochs
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
    b = BatchSampler(10, seed=3)
    first = [b.next_indices(3) for _ in range(4)]
    state = json.loads(json.dumps(b.state_dict()))
    rest_b = [b.next_indices(3) for _ in range(4)]
    c = BatchSampler(10, seed=3)
    c.load_state_dict(state)
    rest_c = [c.next_indices(3) for _ in range(4)]
    assert all(np.array_equal(x, y) for x, y in zip(rest_b, rest_c))
    assert len(first) == 4


def _doc_files(root: Path, names: list[str], text: str, size: int) -> Path:
    """One file per name, each a different ``size``-character stretch of ``text``."""
    root.mkdir(parents=True)
    for i, name in enumerate(names):
        start = (i * size) % (len(text) - size)
        (root / name).write_text(f"# {name}\n" + text[start:start + size])
    return root


def test_a_byte_budget_reads_a_sample_not_the_held_out_documents(tmp_path):
    """--max-corpus-bytes reads the corpus in an order independent of the split: the documents it reads
    are held out at about --val-fraction, not all of them (an order by the split hash read the held-out
    documents first, so a small budget trained on nothing)."""
    text = (Path(sysconfig.get_paths()["stdlib"]) / "argparse.py").read_text()
    corpus = _doc_files(tmp_path / "docs", [f"doc{i:03d}.txt" for i in range(120)], text, 1000)
    held_out = sum(_doc_hash(f"doc{i:03d}.txt") < 0.1 for i in range(120))
    assert held_out >= 8  # the corpus holds enough held-out documents to fill a budget of 20
    ds = build_dataset([str(corpus)], cache_dir=tmp_path / "cache", vocab_size=300, seq_len=16, val_fraction=0.1,
                       max_corpus_bytes=20 * 1000)
    m = json.loads((ds.cache_path / "manifest.json").read_text())
    read = [k for k, rec in m["files"].items() if rec.get("documents")]
    assert 19 <= len(read) <= 21 and ds.meta["train_docs"] + ds.meta["val_docs"] == len(read)
    assert ds.meta["val_docs"] <= 5 and ds.meta["train_docs"] >= len(read) - 5, ds.meta


def test_when_every_document_is_held_out_one_trains(tmp_path):
    """Documents whose split hashes all fall below --val-fraction: the one with the largest hash trains,
    the others are held out (training is never empty while there are two documents)."""
    text = (Path(sysconfig.get_paths()["stdlib"]) / "argparse.py").read_text()
    names = [n for n in (f"g{i}.txt" for i in range(200)) if _doc_hash(n) < 0.4][:3]
    corpus = _doc_files(tmp_path / "docs", names, text, 3000)
    ds = build_dataset([str(corpus)], cache_dir=tmp_path / "cache", vocab_size=300, seq_len=16, val_fraction=0.4)
    assert (ds.meta["train_docs"], ds.meta["val_docs"]) == (1, 2) and ds.n_train_windows > 100
    last = max(names, key=_doc_hash)
    train_text = ds.tokenizer.decode(np.asarray(ds.train).tolist())
    assert train_text.startswith(f"# {last}\n") and (corpus / last).read_text()[-200:] in train_text
    val_text = ds.tokenizer.decode(np.asarray(ds.val).tolist())
    assert all(f"# {n}\n" in val_text for n in names if n != last) and f"# {last}\n" not in val_text
    assert ds.train_documents(np.array([0]))[0].tolist() == [0]  # the moved document begins the stream
