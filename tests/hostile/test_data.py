"""Hostile corpora and mixtures: damaged compressed streams and tables, records that are not text, a 2 GB line,
a file written while it is read, a full disk during a shard write, a busy cache, mixture weights that overflow,
prepared mixtures that are damaged. Each refusal has its documented code, exit 2 (1 for the disk), no traceback,
nothing left behind outside the cache, and what was complete before stays usable."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zstandard
from _corpus import make_corpus
from _hostile import DOCUMENTED, assert_clean, cli, refused, refused_cli

FILES = ["textwrap.py", "string.py", "heapq.py", "bisect.py"]
TEXT = ("The quick brown fox jumps over the lazy dog. " * 40 + "\n") * 3


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from warmstart.data import train_bpe

    corpus = make_corpus(tmp_path_factory.mktemp("hostile-data") / "corpus", FILES)
    path = corpus.parent / "tok.json"
    train_bpe([(corpus / f).read_text() for f in FILES], 300).save(str(path))
    return path


def prepare(tmp: Path, tok: Path, data, *extra):
    return ("prepare", "--data", data, "--tokenizer", tok, "--seq-len", 16, "--cache-dir", tmp / "cache", *extra)


def _records(n: int = 6, **bad) -> list[bytes]:
    lines = [json.dumps({"text": TEXT, "id": i}).encode() for i in range(n)]
    for i, line in bad.items():
        lines[int(i[1:])] = line
    return lines


def _jsonl(t: Path, name: str, lines: list[bytes]) -> Path:
    (t / name).write_bytes(b"\n".join(lines) + b"\n")
    return t / name


def _cut(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flip(data: bytes) -> bytes:
    b = bytearray(data)
    b[len(b) // 2] ^= 0xFF
    return bytes(b)


def _trailer(data: bytes) -> bytes:
    """A gzip member whose CRC-32 (its trailer) does not match the data."""
    return data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:]


def _write(t: Path, name: str, data: bytes) -> Path:
    (t / name).write_bytes(data)
    return t / name


def _big_jsonl(t: Path) -> bytes:
    return b"\n".join(_records(400)) + b"\n"


def _zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def _two_gb_line(t: Path) -> Path:
    """A JSON Lines file whose first record is a single 2 GiB line (zstd makes it 64 kB)."""
    path = t / "huge.jsonl.zst"
    chunk = b"a" * (64 << 20)
    with open(path, "wb") as fh, zstandard.ZstdCompressor(level=1).stream_writer(fh) as w:
        w.write(b'{"text": "')
        for _ in range(32):
            w.write(chunk)
        w.write(b'"}\n' + json.dumps({"text": TEXT}).encode() + b"\n")
    return path


def _parquet(t: Path, name: str, **columns) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), t / name)
    return t / name


def _utf8_break(t: Path) -> Path:
    path = t / "named.txt"
    path.write_bytes(TEXT.encode() * 200 + b"\xff\xfe broken" + TEXT.encode())
    return path


BAD_INPUT = {  # name: (make the file under tmp -> its path, code, what the message names)
    "gz-truncated": (lambda t: _write(t, "a.jsonl.gz", _cut(gzip.compress(_big_jsonl(t)))), "WS212", "a.jsonl.gz"),
    "gz-crc-wrong": (lambda t: _write(t, "a.jsonl.gz", _trailer(gzip.compress(_big_jsonl(t)))), "WS212", "CRC"),
    "zst-truncated": (lambda t: _write(t, "a.jsonl.zst", _cut(_zst(_big_jsonl(t)))), "WS212", "truncated"),
    "zst-corrupt": (lambda t: _write(t, "a.jsonl.zst", _flip(_zst(_big_jsonl(t)))), "WS212", "a.jsonl.zst"),
    "bz2-truncated": (lambda t: _write(t, "a.txt.bz2", _cut(bz2.compress(TEXT.encode() * 300))), "WS212", "bz2"),
    "xz-truncated": (lambda t: _write(t, "a.txt.xz", _cut(lzma.compress(TEXT.encode() * 300))), "WS212", "xz"),
    "parquet-corrupt": (lambda t: _write(t, "a.parquet", b"PAR1" + os.urandom(300) + b"PAR1"), "WS213", "Parquet"),
    "parquet-truncated": (lambda t: _write(t, "a.parquet", _cut(_parquet(t, "x.parquet", text=[TEXT] * 20)
                                                              .read_bytes())), "WS213", "a.parquet"),
    "arrow-truncated": (lambda t: _write(t, "a.arrow", b"ARROW1\0\0" + os.urandom(64)), "WS213", "Arrow"),
    "parquet-int-column": (lambda t: _parquet(t, "a.parquet", text=[1, 2, 3]), "WS211", "int64, not text"),
    "jsonl-not-json": (lambda t: _jsonl(t, "a.jsonl", _records(c3=b'{"text": "unterminated')), "WS211", "line 3"),
    "jsonl-text-number": (lambda t: _jsonl(t, "a.jsonl", _records(c2=b'{"text": 42}')), "WS211", "int, not a string"),
    "jsonl-text-list": (lambda t: _jsonl(t, "a.jsonl", _records(c4=b'{"text": ["a", "b"]}')), "WS211", "list"),
    "jsonl-not-object": (lambda t: _jsonl(t, "a.jsonl", _records(c1=b'["text", "x"]')), "WS211", "not a JSON object"),
    "jsonl-field-missing-later": (lambda t: _jsonl(t, "a.jsonl", _records(c5=b'{"body": "x"}')), "WS211",
                                  "no field 'text'"),
    "jsonl-lone-surrogate": (lambda t: _jsonl(t, "a.jsonl", _records(c2=b'{"text": "a \\ud800 b"}')), "WS211",
                             "surrogate"),
    "jsonl-not-utf8": (lambda t: _jsonl(t, "a.jsonl", _records(c2=b'{"text": "caf\xe9"}')), "WS211", "line 2"),
    "jsonl-deep-nesting": (lambda t: _jsonl(t, "a.jsonl", _records(c1=b"[" * 100_000 + b"]" * 100_000)), "WS211",
                           "line 1"),
    "json-array-no-comma": (lambda t: _write(t, "a.json", b'[{"text": "a b c"} {"text": "d"}]'), "WS211", "item"),
    "json-array-truncated": (lambda t: _write(t, "a.json", json.dumps([{"text": TEXT}] * 5).encode()[:-30]), "WS211",
                             "item 4"),
    "two-gb-line": (_two_gb_line, "WS214", "64 MiB"),
    "text-stops-being-utf8": (_utf8_break, "WS211", "not UTF-8 text at byte"),
    "jsonl-field-missing": (lambda t: _jsonl(t, "a.jsonl", [b'{"body": "x", "id": 1}'] * 3), "WS002",
                            "fields: body, id"),
    "parquet-column-missing": (lambda t: _parquet(t, "a.parquet", content=[TEXT]), "WS002", "content"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_refused_with_its_code(case, tmp_path, tok):
    make, code, names = BAD_INPUT[case]
    src = tmp_path / "src"
    src.mkdir()
    path = make(src)
    refused_cli(tmp_path, prepare(tmp_path, tok, path), code, 2, says=names)


SKIPPABLE = ["gz-truncated", "zst-truncated", "parquet-corrupt", "jsonl-not-json", "jsonl-text-number",
             "jsonl-lone-surrogate", "two-gb-line", "jsonl-field-missing-later"]


@pytest.mark.parametrize("case", SKIPPABLE)
def test_skip_bad_records_counts_and_keeps_the_rest(case, tmp_path, tok):
    make, _, _ = BAD_INPUT[case]
    src = tmp_path / "src"
    src.mkdir()
    make(src)
    (src / "good.txt").write_text(TEXT * 20)
    o = cli(*prepare(tmp_path, tok, src, "--skip-bad-records"))
    assert_clean(o)
    assert o.exit == 0 and "skipped" in o.out and ("bad record" in o.out or "damaged" in o.out or "too large"
                                                   in o.out), o.text


def test_a_file_written_while_it_is_read(tmp_path, tok):
    grow = tmp_path / "src" / "growing.txt"
    grow.parent.mkdir()
    grow.write_text(TEXT * 200)
    stop = threading.Event()

    def append():
        while not stop.is_set():
            with open(grow, "a") as fh:
                fh.write("more text\n")
            time.sleep(0.003)

    writer = threading.Thread(target=append)
    writer.start()
    try:
        refused(cli(*prepare(tmp_path, tok, grow)), "WS215", 2, says="growing.txt")
    finally:
        stop.set()
        writer.join()
    o = cli(*prepare(tmp_path, tok, grow))  # once nothing writes to it
    assert o.exit == 0, o.text


def _limited(limit: int):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_a_full_disk_during_a_shard_write_keeps_the_cache_consistent(tmp_path, tok):
    from warmstart.data import load_cache

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text(TEXT * 5)
    first = cli(*prepare(tmp_path, tok, src))
    entry = Path(next(line.split("cache: ", 1)[1] for line in first.out.splitlines() if line.startswith("cache: ")))
    before = (entry / "manifest.json").read_bytes()
    for i in range(3):
        (src / f"more{i}.txt").write_text(f"{i} " + TEXT * 300)
    args = [sys.executable, "-m", "warmstart", *map(str, prepare(tmp_path, tok, src))]
    t0 = time.time()
    p = subprocess.run(args, capture_output=True, text=True, preexec_fn=_limited(96_000), timeout=60)
    assert p.returncode == 1 and "[WS216]" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert "past the size" in p.stderr and time.time() - t0 < 30
    assert (entry / "manifest.json").read_bytes() == before  # only complete shards named, the old ones
    assert not [q.name for q in (entry / "shards").iterdir() if q.name.startswith(".")]  # nothing half-written
    assert load_cache(entry, seq_len=16).meta["stats"]["documents"] == 1
    again = cli(*prepare(tmp_path, tok, src))  # room again: it continues
    assert again.exit == 0 and load_cache(entry, seq_len=16).meta["stats"]["documents"] == 4, again.text


# ------------------------------------------------------------------ mixtures


def _two_sources(t: Path) -> tuple[Path, Path]:
    a, b = t / "a", t / "b"
    a.mkdir()
    b.mkdir()
    (a / "a.txt").write_text(TEXT * 30)
    (b / "b.txt").write_text(TEXT.upper() * 30)
    return a, b


MIXTURE_CASES = {  # name: (--data values from the two sources, code, what the message names)
    "weights-overflow": (lambda a, b: [f"{a}:1e308", f"{b}:1e308"], "WS002", "at most"),
    "weight-inf": (lambda a, b: [f"{a}:inf", f"{b}:1"], "WS002", "positive"),
    "weight-past-float": (lambda a, b: [f"{a}:1e400", f"{b}:1"], "WS002", "positive"),
    "weight-nan": (lambda a, b: [f"{a}:nan", f"{b}:1"], "WS002", "positive"),
    "weight-zero": (lambda a, b: [f"{a}:0", f"{b}:1"], "WS002", "positive"),
    "weight-negative": (lambda a, b: [f"{a}:-2", f"{b}:1"], "WS002", "positive"),
    "weight-huge": (lambda a, b: [f"{a}:5e12", f"{b}:1"], "WS002", "at most"),
    "weights-on-some": (lambda a, b: [f"{a}:0.5", str(b)], "WS002", "some sources but not"),
}


@pytest.mark.parametrize("case", list(MIXTURE_CASES))
def test_mixture_weights_are_finite_positive_and_bounded(case, tmp_path, tok):
    data, code, names = MIXTURE_CASES[case]
    a, b = _two_sources(tmp_path)
    args = ["pretrain", "--preset", "llama-tiny", "--tokenizer", tok, "--seq-len", 16, "--max-steps", 1,
            "--cache-dir", tmp_path / "cache", "--out", tmp_path / "run"]
    for d in data(a, b):
        args += ["--data", d]
    refused_cli(tmp_path, args, code, 2, says=names)


def test_yaml_weights_that_overflow_are_refused(tmp_path, tok):
    a, b = _two_sources(tmp_path)
    y = tmp_path / "run.yaml"
    y.write_text(f"data:\n  {a}: 1.0e+308\n  {b}: 1.0e+308\n")
    refused_cli(tmp_path, ("pretrain", "--config", y, "--tokenizer", tok, "--seq-len", 16, "--cache-dir",
                           tmp_path / "cache", "--out", tmp_path / "run"), "WS002", 2, says="at most")


def _prepared_mixture(tmp: Path, tok: Path) -> Path:
    a, b = _two_sources(tmp)
    o = cli(*prepare(tmp, tok, f"{a}:0.7", "--data", f"{b}:0.3"))
    assert o.exit == 0, o.text
    return Path(next(line.split("cache: ", 1)[1] for line in o.out.splitlines() if line.startswith("cache: ")))


PREPARED_CASES = {
    "mixture-json-garbage": (lambda m: (m / "mixture.json").write_text("{"), "WS207", "mixture.json"),
    "mixture-weight-nan": (lambda m: (m / "mixture.json").write_text((m / "mixture.json").read_text().replace(
        '"weight": 0.7', '"weight": NaN')), "WS207", "positive weights"),
    "mixture-entry-gone": (lambda m: (m / "mixture.json").write_text((m / "mixture.json").read_text().replace(
        '"entry": "../../', '"entry": "../../gone')), "WS207", "manifest.json"),
}


@pytest.mark.parametrize("case", list(PREPARED_CASES))
def test_a_damaged_prepared_mixture_is_refused(case, tmp_path, tok):
    mix = _prepared_mixture(tmp_path, tok)
    damage, code, names = PREPARED_CASES[case]
    damage(mix)
    refused_cli(tmp_path, ("pretrain", "--preset", "llama-tiny", "--data", mix, "--seq-len", 16, "--max-steps", 1,
                           "--out", tmp_path / "run"), code, 2, says=names)


def test_a_prepared_mixture_trains_and_cannot_be_weighted_again(tmp_path, tok):
    mix = _prepared_mixture(tmp_path, tok)
    refused_cli(tmp_path, ("pretrain", "--preset", "llama-tiny", "--data", f"{mix}:0.5", "--data",
                           f"{tmp_path / 'a'}:0.5", "--tokenizer", tok, "--seq-len", 16, "--max-steps", 1,
                           "--cache-dir", tmp_path / "cache", "--out", tmp_path / "run"), "WS002", 2,
                says="prepared mixture")
    o = cli("pretrain", "--preset", "llama-tiny", "--data", mix, "--seq-len", 16, "--batch-size", 2, "--max-steps", 2,
            "--eval-tokens", 32, "--eval-every", 0, "--out", tmp_path / "run", "--quiet")
    assert o.exit == 0 and "0.700 ->" in o.out, o.text


def test_every_data_code_is_documented():
    codes = {c for _, c, _ in BAD_INPUT.values()} | {c for _, c, _ in MIXTURE_CASES.values()} | {"WS210", "WS215",
                                                                                                 "WS216"}
    assert codes <= DOCUMENTED
