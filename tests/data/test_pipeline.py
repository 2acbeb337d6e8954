"""The token pipeline end to end on real files: every input format by content (compressed variants too), the
sharded cache and its manifest, workers, a SIGKILL and the rerun, incremental preparation, the lock, windows
across shards, document offsets, a cache moved to another place, housekeeping."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zstandard
from _corpus import CORPUS_FILES, make_corpus

from warmstart.data import DataSettings, build_dataset, build_eval_set, load_cache
from warmstart.data.progress import EntryLock
from warmstart.errors import CacheBusyError, UsageError

FIXTURES = Path(__file__).parent / "fixtures"
SMALL = dict(seq_len=32, unit_bytes=20_000, shard_tokens=3000)  # several units and shards from a small corpus


def texts(corpus: Path) -> list[str]:
    return [(corpus / f).read_text() for f in CORPUS_FILES]


def prep(data, cache, tok, **kw):
    return build_dataset([str(d) for d in data], DataSettings(cache_dir=str(cache), **{**SMALL, **kw}), tokenizer=tok)


def tree(entry: Path) -> dict[str, bytes]:
    """Every file of an entry, by relative path (its lock and status file left out)."""
    return {p.relative_to(entry).as_posix(): p.read_bytes() for p in sorted(entry.rglob("*"))
            if p.is_file() and p.name not in (".lock", ".progress.json")}


def decoded_docs(ds) -> list[str]:
    tok, eos = ds.tokenizer, ds.eos_id
    ids = np.concatenate([np.asarray(ds.train), np.asarray(ds.val)])
    return [tok.decode(seg.tolist()) for seg in np.split(ids, np.flatnonzero(ids == eos) + 1) if len(seg) > 1]


# ------------------------------------------------------------------ formats


def _jsonl(docs: list[str], field: str = "text") -> bytes:
    return "".join(json.dumps({field: t, "id": i}) + "\n" for i, t in enumerate(docs)).encode()


COMPRESS = {"": lambda b: b, ".gz": gzip.compress, ".zst": lambda b: zstandard.ZstdCompressor().compress(b),
            ".bz2": bz2.compress, ".xz": lzma.compress}


@pytest.mark.parametrize("ext", list(COMPRESS))
def test_every_format_read_by_content_compressed_or_not(ext, corpus, tmp_path, tiny_tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = texts(corpus)
    d = tmp_path / "mixed"
    d.mkdir()
    squeeze = COMPRESS[ext]
    (d / f"a.jsonl{ext}").write_bytes(squeeze(_jsonl(docs)))
    (d / f"b.json{ext}").write_bytes(squeeze(_jsonl(docs)))  # a .json holding JSON Lines: records
    (d / f"c.json{ext}").write_bytes(squeeze(json.dumps([{"text": t} for t in docs]).encode()))
    (d / f"no_suffix{ext}").write_bytes(squeeze(docs[0].encode()))  # text, whatever the name
    pq.write_table(pa.table({"text": docs}), d / "e.bin")  # Parquet under any name
    ds = prep([d], tmp_path / "cache", tiny_tokenizer)
    got = decoded_docs(ds)
    assert sorted(got) == sorted(docs * 4 + [docs[0]])
    assert ds.meta["stats"]["documents"] == len(docs) * 4 + 1


def test_parquet_shards_in_the_hf_layout_and_arrow_and_datasets_folders(corpus, tmp_path, tiny_tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = texts(corpus)
    hf = tmp_path / "hub" / "data"
    hf.mkdir(parents=True)
    for i in range(3):
        pq.write_table(pa.table({"content": docs[i::3]}), hf / f"train-{i:05d}-of-00003.parquet", row_group_size=2)
    (tmp_path / "hub" / "README.md").write_text("---\nlicense: mit\n---\n")
    ds = prep([tmp_path / "hub"], tmp_path / "cache", tiny_tokenizer, text_field="content")
    assert sorted(decoded_docs(ds)) == sorted(docs + ["---\nlicense: mit\n---\n"])
    with pytest.raises(UsageError, match="has no field 'text'.*content"):
        prep([hf / "train-00000-of-00003.parquet"], tmp_path / "cache", tiny_tokenizer)
    # Arrow IPC stream and file formats, large_string columns
    arrow = tmp_path / "arrow"
    arrow.mkdir()
    table = pa.table({"text": pa.array(docs, pa.large_string())})
    with pa.OSFile(str(arrow / "s.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table, max_chunksize=3)
    with pa.OSFile(str(arrow / "f.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table, max_chunksize=5)
    assert sorted(decoded_docs(prep([arrow], tmp_path / "cache", tiny_tokenizer))) == sorted(docs * 2)


def test_datasets_save_to_disk_folders(tmp_path, tiny_tokenizer):
    """Folders written by `datasets` itself (tests/data/fixtures/make_datasets_fixtures.py): a Dataset and a
    DatasetDict (its train split taken, the others counted as left out)."""
    one = prep([FIXTURES / "datasets_one"], tmp_path / "cache", tiny_tokenizer)
    want = json.loads((FIXTURES / "datasets_texts.json").read_text())
    assert sorted(decoded_docs(one)) == sorted(want["train"])
    assert one.meta["stats"]["skipped"]["dataset metadata"] == 2
    both = prep([FIXTURES / "datasets_dict"], tmp_path / "cache", tiny_tokenizer)
    assert sorted(decoded_docs(both)) == sorted(want["train"])
    assert both.meta["stats"]["skipped"]["other split"] == 1


def test_a_directory_counts_what_it_leaves_out_by_reason(corpus, tmp_path, tiny_tokenizer):
    (corpus / ".git").mkdir()
    (corpus / ".git" / "config").write_text("[core]\n")
    (corpus / "a.zip").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    (corpus / "blob.o").write_bytes(b"\x7fELF\x00\x01" * 30)
    (corpus / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (corpus / "empty.md").write_text(" \n")
    (corpus / "rows.jsonl").write_text('{"body": "a"}\n')
    os.mkfifo(corpus / "pipe")
    ds = prep([corpus], tmp_path / "cache", tiny_tokenizer)
    assert ds.meta["stats"]["skipped"] == {"binary": 1, "empty": 1, "hidden": 1, "no text field": 1,
                                           "not a regular file": 1, "undecodable": 1, "unsupported": 1}
    assert ds.meta["stats"]["documents"] == len(CORPUS_FILES)
    assert "7 files or records skipped" in ds.summary()


def test_long_documents_come_in_pieces_with_one_eos(tmp_path, tiny_tokenizer):
    from warmstart.data import readers

    d = tmp_path / "c"
    d.mkdir()
    line = "word " * 100_000  # 500 kB on one line, no line end
    (d / "long.txt").write_text(line * 3)
    (d / "short.txt").write_text("x = 1\n" * 400)
    old = readers.PART_CHARS
    readers.PART_CHARS = 200_000
    try:
        ds = prep([d], tmp_path / "cache", tiny_tokenizer, val_fraction=0.01)
    finally:
        readers.PART_CHARS = old
    assert ds.meta["stats"]["documents"] == 2
    assert sorted(decoded_docs(ds), key=len) == ["x = 1\n" * 400, line * 3]


# ------------------------------------------------------------------ the cache


def test_one_and_four_workers_give_the_same_cache(corpus, tmp_path, tiny_tokenizer):
    a = prep([corpus], tmp_path / "one", tiny_tokenizer, workers=1)
    b = prep([corpus], tmp_path / "four", tiny_tokenizer, workers=4)
    assert a.meta["shards"] >= 4  # several units, several shards each
    assert tree(a.cache_path) == tree(b.cache_path) and a.fingerprint == b.fingerprint
    manifest = (a.cache_path / "manifest.json").read_text()
    assert str(tmp_path) not in manifest and str(corpus) not in manifest  # no absolute path


def test_windows_span_shards_never_the_split_and_documents_are_found(corpus, tmp_path, tiny_tokenizer):
    ds = prep([corpus], tmp_path / "cache", tiny_tokenizer)
    train = np.asarray(ds.train)
    assert len(ds.train.segments) > 1
    w = ds.train_windows(np.arange(ds.n_train_windows))
    assert np.array_equal(w[:, :-1].reshape(-1), train[: ds.n_train_windows * 32])
    assert np.array_equal(w[1:, 0], w[:-1, -1])
    # the two streams share no token of a shard, and together they are every token of every shard
    covered = np.zeros(sum(r["train_tokens"] + r["val_tokens"] for r in ds.train.shards.records), dtype=np.int8)
    offsets = np.cumsum([0] + [r["train_tokens"] + r["val_tokens"] for r in ds.train.shards.records])
    for shard, lo, hi in ds.train.segments + ds.val.segments:
        covered[offsets[shard] + lo : offsets[shard] + hi] += 1
    assert (covered == 1).all() and ds.meta["val_docs"] == 2
    for i, starts in zip(range(ds.n_train_windows), ds.train_documents(np.arange(ds.n_train_windows))):
        window = train[i * 32 : i * 32 + 33]
        eos_after = np.flatnonzero(window[:-1] == ds.eos_id) + 1
        want = set(eos_after.tolist()) | ({0} if i == 0 else set())
        if i and train[i * 32 - 1] == ds.eos_id:
            want.add(0)
        assert set(starts.tolist()) == want, i


def test_sigkill_at_any_point_then_a_rerun_gives_the_same_cache(tmp_path, tiny_tokenizer):
    corpus = make_corpus(tmp_path / "corpus")
    for i in range(8):  # more text, so that the kill falls inside the work
        shutil.copytree(corpus / "json", corpus / f"copy{i}")
    tok = tmp_path / "tok.json"
    tiny_tokenizer.save(str(tok))
    reference = prep([corpus], tmp_path / "ref", tiny_tokenizer, workers=2)
    script = textwrap.dedent(f"""
        from warmstart.data import DataSettings, build_dataset
        build_dataset([{str(corpus)!r}], DataSettings(cache_dir={str(tmp_path / 'k')!r}, workers=2,
                      **{SMALL!r}), tokenizer_path={str(tok)!r})
    """)
    shards = tmp_path / "k" / reference.cache_path.name / "shards"
    for seen in (1, 6):
        p = subprocess.Popen([sys.executable, "-c", script])
        deadline = time.time() + 120
        while len(list(shards.glob("*.idx"))) < seen and p.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        p.send_signal(signal.SIGKILL)
        p.wait()
    again = prep([corpus], tmp_path / "k", tiny_tokenizer, workers=2)
    assert tree(again.cache_path) == tree(reference.cache_path)


def test_adding_changing_touching_removing_files(corpus, tmp_path, tiny_tokenizer):
    logs: list[str] = []
    s = DataSettings(cache_dir=str(tmp_path / "cache"), **SMALL)
    build = lambda: build_dataset([str(corpus)], s, tokenizer=tiny_tokenizer, log=logs.append)  # noqa: E731
    first = build()
    units = {u["id"] for u in json.loads((first.cache_path / "manifest.json").read_text())["units"]}
    (corpus / "new.py").write_text((corpus / "glob.py").read_text().replace("glob", "blog"))
    logs.clear()
    added = build()
    assert added.cache_path == first.cache_path and added.fingerprint != first.fingerprint
    assert any(line.startswith("tokenized 1 files") for line in logs), logs
    assert added.meta["stats"]["documents"] == len(CORPUS_FILES) + 1
    m = json.loads((first.cache_path / "manifest.json").read_text())
    assert units <= {u["id"] for u in m["units"]}  # every earlier unit kept
    os.utime(corpus / "heapq.py", ns=(1_700_000_000_000_000_000,) * 2)  # touched: the same bytes
    logs.clear()
    assert build().fingerprint == added.fingerprint and any("token cache hit" in x for x in logs), logs
    (corpus / "heapq.py").write_text((corpus / "heapq.py").read_text() + "\n# changed\n")
    logs.clear()
    changed = build()
    unit = m["files"]["heapq.py"]["unit"]
    share = len(next(u for u in m["units"] if u["id"] == unit)["files"])
    assert any(f"unit {unit} is stale" in x for x in logs) and any(f"tokenized {share} files" in x for x in logs)
    (corpus / "new.py").unlink()
    removed = build()
    assert removed.meta["stats"]["documents"] == len(CORPUS_FILES) != changed.meta["stats"]["documents"]
    fresh = prep([corpus], tmp_path / "fresh", tiny_tokenizer)
    assert sorted(decoded_docs(removed)) == sorted(decoded_docs(fresh))


def test_a_second_prepare_on_a_busy_entry_is_refused_and_a_run_waits(corpus, tmp_path, tiny_tokenizer):
    from _hostile import cli, refused

    tok = tmp_path / "tok.json"
    tiny_tokenizer.save(str(tok))
    ds = prep([corpus], tmp_path / "cache", tiny_tokenizer)
    lock = EntryLock(ds.cache_path)
    assert lock.take(True)
    try:
        refused(cli("prepare", "--data", corpus, "--tokenizer", tok, "--seq-len", 32, "--cache-dir", tmp_path / "cache"),
                "WS210", 2, says=f"pid {os.getpid()}")
        with pytest.raises(CacheBusyError):
            build_dataset([str(corpus)], DataSettings(cache_dir=str(tmp_path / "cache"), **SMALL),
                          tokenizer=tiny_tokenizer, refuse_busy=True)
    finally:
        lock.release()


def test_a_cache_moved_elsewhere_is_the_same_data_and_housekeeping(corpus, tmp_path, tiny_tokenizer):
    from _hostile import cli

    ds = prep([corpus], tmp_path / "cache", tiny_tokenizer)
    moved = tmp_path / "elsewhere" / "entry"
    shutil.copytree(ds.cache_path, moved)
    again = load_cache(moved, seq_len=32)
    assert again.fingerprint == ds.fingerprint and np.array_equal(np.asarray(again.train), np.asarray(ds.train))
    ev = build_eval_set(str(corpus), tokenizer=tiny_tokenizer, settings=DataSettings(cache_dir=str(tmp_path / "cache"),
                                                                                    **SMALL))
    assert ev.cache_path == ds.cache_path and len(ev.val) == len(ds.train) + len(ds.val)
    (corpus / "heapq.py").write_text("# replaced\n" * 50)
    prep([corpus], tmp_path / "cache", tiny_tokenizer)  # the changed file's unit rebuilt: its old shards stay
    listed = cli("prepare", "--list", "--cache-dir", tmp_path / "cache")
    assert listed.exit == 0 and "1 entries" in listed.out and "unreferenced:" in listed.out, listed.text
    cleaned = cli("prepare", "--clean", "--cache-dir", tmp_path / "cache")
    assert cleaned.exit == 0 and "removed" in cleaned.out, cleaned.text
    assert "unreferenced" not in cli("prepare", "--list", "--cache-dir", tmp_path / "cache").out
    assert len(decoded_docs(prep([corpus], tmp_path / "cache", tiny_tokenizer))) == len(CORPUS_FILES)


# ------------------------------------------------------------------ settings, sampler, mixtures


def test_the_data_settings_cross_from_the_config_once():
    import dataclasses

    from warmstart.train.config import TrainConfig

    cfg = TrainConfig(seq_len=64, include=["*.py"], workers=3, skip_bad_records=True, cache_dir="/c")
    s = cfg.data_settings()
    assert (s.seq_len, s.include, s.workers, s.skip_bad_records, s.cache_dir) == (64, ("*.py",), 3, True, "/c")
    defaults, train = DataSettings(), TrainConfig()
    for f in dataclasses.fields(DataSettings):  # one default for each setting both hold
        if hasattr(train, f.name):
            assert getattr(train, f.name) == (list(getattr(defaults, f.name)) if f.name == "include"
                                              else getattr(defaults, f.name)), f.name


def test_the_window_order_is_computed_per_index_and_resumes_exactly():
    import tracemalloc

    from warmstart.data import BatchSampler
    from warmstart.data.sampler import permute

    n = 7 * 10**10  # 70 billion windows: nothing of that size is ever built
    tracemalloc.start()
    t0 = time.perf_counter()
    s = BatchSampler(n, seed=3)
    first = [s.next_indices(16) for _ in range(5)]
    took, peak = time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert took < 1.0 and peak < 1 << 20 and all(((b >= 0) & (b < n)).all() for b in first)
    state = json.loads(json.dumps(s.state_dict()))
    rest = s.next_indices(32)
    again = BatchSampler(n, seed=3)
    again.load_state_dict(state)
    assert np.array_equal(again.next_indices(32), rest)
    for m in (1, 2, 3, 97, 4096, 5000):
        assert sorted(permute(np.arange(m), m, 1, 0).tolist()) == list(range(m))


def test_a_prepared_mixture_is_the_weighted_list(tmp_path, tiny_tokenizer):
    from _hostile import cli

    a, b = make_corpus(tmp_path / "a", CORPUS_FILES[:6]), make_corpus(tmp_path / "b", CORPUS_FILES[6:])
    tok = tmp_path / "tok.json"
    tiny_tokenizer.save(str(tok))
    o = cli("prepare", "--data", f"{a}:3", "--data", f"{b}:1", "--tokenizer", tok, "--seq-len", 32, "--cache-dir",
            tmp_path / "cache")
    assert o.exit == 0, o.text
    mix_dir = next(line.split("cache: ", 1)[1] for line in o.out.splitlines() if line.startswith("cache: "))
    prepared = build_dataset([mix_dir], DataSettings(seq_len=32))
    listed = build_dataset([f"{a}:3", f"{b}:1"], DataSettings(seq_len=32, cache_dir=str(tmp_path / "cache")),
                           tokenizer=tiny_tokenizer)
    assert prepared.fingerprint == listed.fingerprint and prepared.weights == listed.weights == [0.75, 0.25]
    sa, sb = prepared.sampler(5), listed.sampler(5)
    assert np.array_equal(prepared.train_windows(sa.next_indices(20)), listed.train_windows(sb.next_indices(20)))
