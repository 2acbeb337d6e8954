"""Weighted mixtures (``--data PATH:WEIGHT``), the mixture sampler, and extra validation sets' cache entries."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _corpus import make_corpus

from warmstart.data import (
    BatchSampler, MixtureDataset, MixtureSampler, TokenDataset, build_dataset, build_eval_set, parse_data_specs,
)
from warmstart.data.mixture import parse_data_spec, part_seed
from warmstart.errors import EmptyCorpusError, ResumeError, UsageError

KW = dict(vocab_size=400, seq_len=32)
CODE = ["textwrap.py", "string.py", "heapq.py", "bisect.py", "queue.py", "shlex.py"]
REPLAY = ["json/decoder.py", "json/encoder.py", "colorsys.py", "fnmatch.py", "keyword.py", "glob.py"]


@pytest.fixture
def two_corpora(tmp_path):
    return make_corpus(tmp_path / "code", CODE), make_corpus(tmp_path / "replay", REPLAY)


# ------------------------------------------------------------------ spelling


def test_weight_spelling_and_paths_holding_colons(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_data_spec("code/:0.9") == ("code/", 0.9)
    assert parse_data_spec("replay.jsonl:1") == ("replay.jsonl", 1.0)
    assert parse_data_spec("a:b.txt:2.5e-1") == ("a:b.txt", 0.25)
    assert parse_data_spec("plain/") == ("plain/", None)
    assert parse_data_spec("notes:draft") == ("notes:draft", None)  # not a number: the whole is a path
    (tmp_path / "v:2").mkdir()  # an existing path is never split, whatever it holds
    assert parse_data_spec("v:2") == ("v:2", None)
    assert parse_data_spec("v:2:0.5") == ("v:2", 0.5)
    for bad in ("code/:0", "code/:-1", "code/:nan"):
        with pytest.raises(UsageError, match="positive"):
            parse_data_spec(bad)
    with pytest.raises(UsageError, match="some sources but not to plain/"):
        parse_data_specs(["code/:0.9", "plain/"])
    assert parse_data_specs(None) == []


# ------------------------------------------------------------------ sampler


def test_mixture_sampler_follows_the_weights_by_tokens():
    weights = [0.6, 0.3, 0.1]
    s = MixtureSampler([40, 7, 3], weights, seed=5)
    src = np.searchsorted(s.offsets, s.next_indices(5000), side="right") - 1
    shares = np.bincount(src, minlength=3) / 5000
    assert np.all(np.abs(shares - weights) < 0.01), shares
    # At every point each source is less than two windows from its share.
    s = MixtureSampler([40, 7, 3], [0.55, 0.3, 0.15], seed=1)
    for k in range(1, 400):
        s.next_indices(1)
        assert np.all(np.abs(s.counts - s.weights * k) < 2), (k, s.counts)
    # Within a source each epoch visits every window once, in that source's own BatchSampler order.
    s = MixtureSampler([40, 7, 3], weights, seed=5)
    got = s.next_indices(2000)
    rare = got[(got >= 47)] - 47
    assert sorted(rare[:3].tolist()) == [0, 1, 2]
    assert np.array_equal(rare[:6], BatchSampler(3, seed=part_seed(5, 2)).next_indices(6))


def test_mixture_order_does_not_depend_on_how_draws_are_split():
    whole = MixtureSampler([30, 9], [0.8, 0.2], seed=2).next_indices(96)
    chunked = MixtureSampler([30, 9], [0.8, 0.2], seed=2)
    parts = np.concatenate([chunked.next_indices(n) for n in (1, 7, 16, 40, 32)])
    assert np.array_equal(whole, parts)
    # A global draw of 8 per step (the ranks' slices together) is the same order as one long draw.
    g = MixtureSampler([30, 9], [0.8, 0.2], seed=2)
    assert np.array_equal(np.concatenate([g.next_indices(8) for _ in range(12)]), whole)
    assert not np.array_equal(whole, MixtureSampler([30, 9], [0.8, 0.2], seed=3).next_indices(96))


def test_mixture_cursor_resumes_exactly():
    a = MixtureSampler([30, 9, 4], [0.7, 0.2, 0.1], seed=4)
    a.next_indices(37)
    state = json.loads(json.dumps(a.state_dict()))
    rest_a = a.next_indices(100)
    b = MixtureSampler([30, 9, 4], [0.7, 0.2, 0.1], seed=4)
    b.load_state_dict(state)
    assert np.array_equal(b.next_indices(100), rest_a)
    assert b.state_dict() == a.state_dict()
    with pytest.raises(ResumeError, match="another mixture"):
        MixtureSampler([30, 9, 4], [0.6, 0.3, 0.1], seed=4).load_state_dict(state)
    with pytest.raises(ResumeError):
        MixtureSampler([30, 9, 5], [0.7, 0.2, 0.1], seed=4).load_state_dict(state)


# ------------------------------------------------------------------ dataset


def test_each_source_is_cached_once_and_weights_never_retokenize(two_corpora, cache):
    code, replay = two_corpora
    pooled = build_dataset([str(code), str(replay)], cache_dir=cache, **KW)  # no weights: one pooled corpus
    assert isinstance(pooled, TokenDataset)
    logs: list[str] = []
    mix = build_dataset([f"{code}:0.9", f"{replay}:0.1"], cache_dir=cache, log=logs.append, **KW)
    assert isinstance(mix, MixtureDataset) and mix.weights == pytest.approx([0.9, 0.1])
    # One tokenizer for every source: the BPE the same --data without weights trained (reused, not retrained).
    assert mix.tokenizer.to_str() == pooled.tokenizer.to_str()
    assert not any("trained byte-level BPE" in s for s in logs)
    # Each source's entry is the one building that source alone with this tokenizer gives.
    for part, path in zip(mix.parts, (code, replay)):
        alone = build_dataset([str(path)], tokenizer=pooled.tokenizer, cache_dir=cache, **KW)
        assert part.cache_path == alone.cache_path and part.fingerprint == alone.fingerprint
    logs.clear()
    other = build_dataset([f"{code}:0.5", f"{replay}:0.5"], cache_dir=cache, log=logs.append, **KW)
    assert sum("token cache hit" in s for s in logs) == 2 and not any("tokenized" in s for s in logs)
    assert other.fingerprint != mix.fingerprint != pooled.fingerprint
    assert [p.cache_path for p in other.parts] == [p.cache_path for p in mix.parts]
    assert "mixture of 2 sources" in mix.summary()


def test_mixture_windows_and_held_out_split(two_corpora, cache):
    code, replay = two_corpora
    mix = build_dataset([f"{code}:3", f"{replay}:1"], cache_dir=cache, **KW)
    a, b = mix.parts
    assert mix.n_train_windows == a.n_train_windows + b.n_train_windows
    idx = np.array([0, a.n_train_windows, a.n_train_windows - 1, a.n_train_windows + 2])
    w = mix.train_windows(idx)
    assert np.array_equal(w[0], a.train_windows(np.array([0]))[0])
    assert np.array_equal(w[1], b.train_windows(np.array([0]))[0])
    assert np.array_equal(w[3], b.train_windows(np.array([2]))[0])
    # val: each source's first held-out windows, by weight (8 windows of 32 -> 6 + 2).
    vi = mix.val_window_indices(8 * 32)
    assert vi.tolist() == [0, 1, 2, 3, 4, 5, a.n_val_windows, a.n_val_windows + 1]
    assert np.array_equal(mix.val_windows(vi[-1:])[0], b.val_windows(np.array([1]))[0])
    drawn = mix.drawn(mix.sampler(0))
    assert [d["weight"] for d in drawn] == [0.75, 0.25] and all(d["tokens_drawn"] == 0 for d in drawn)


# ------------------------------------------------------------------ extra validation sets


def test_eval_set_holds_every_document_and_is_cached(corpus, cache, tmp_path):
    ds = build_dataset([str(corpus)], cache_dir=cache, **KW)
    logs: list[str] = []
    ev = build_eval_set(str(corpus), tokenizer=ds.tokenizer, seq_len=32, cache_dir=cache, log=logs.append)
    n_files = len(list(corpus.rglob("*.py")))
    assert len(ev.train) == 0 and ev.meta["val_docs"] == n_files
    assert len(ev.val) == len(ds.train) + len(ds.val)  # the whole corpus, nothing held back
    assert int((np.asarray(ev.val) == ds.eos_id).sum()) == n_files
    # Cached once, independent of seq_len; another tokenizer is another entry.
    logs.clear()
    again = build_eval_set(str(corpus), tokenizer=ds.tokenizer, seq_len=64, cache_dir=cache, log=logs.append)
    assert any("token cache hit" in s for s in logs) and again.cache_path == ev.cache_path
    assert again.val_window_indices(64 * 3).tolist() == [0, 1, 2]
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("x = 1\n")
    with pytest.raises(EmptyCorpusError, match="an evaluation set needs"):
        build_eval_set(str(tiny), tokenizer=ds.tokenizer, seq_len=32, cache_dir=cache)
