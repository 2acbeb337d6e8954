"""Hostile run directories: links, FIFOs and wrong kinds of file where a run writes its own files (the lock,
metrics.jsonl, config.yaml, summary.json, tokenizer.json, tb/, checkpoints/), and a GGUF whose metadata nests
arrays without end. Each is refused with its code before anything is written; a link's target keeps its bytes
and its mtime, a dangling link's target is not created. And a real run, watched through an audit hook, opens
none of its files through a link."""

from __future__ import annotations

import os
import stat
import struct
import sys
from pathlib import Path

import pytest
from _hostile import TINY_RUN, cli, refused_cli

from warmstart.checkpoint.run import ENTRIES, LOCK_NAME


def _target(tmp: Path) -> Path:
    """A user's file outside the run that a link in the run points at."""
    p = tmp / "precious.txt"
    p.write_bytes(b"the user's own bytes\n")
    os.utime(p, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    return p


def _link(name: str, dangling: bool = False):
    def place(run: Path, tmp: Path) -> Path:
        target = tmp / "nowhere.txt" if dangling else _target(tmp)
        (run / name).unlink(missing_ok=True)
        os.symlink(target, run / name)
        return target
    return place


def _fifo(name: str):
    def place(run: Path, tmp: Path) -> None:
        (run / name).unlink(missing_ok=True)
        os.mkfifo(run / name)
    return place


def _dir_link(name: str):
    def place(run: Path, tmp: Path) -> Path:
        outside = tmp / "elsewhere"
        outside.mkdir()
        p = run / name
        if p.is_dir() and not p.is_symlink():
            p.rename(outside / name)  # the run's own directory, moved out and linked back
        os.symlink(outside / name if (outside / name).exists() else outside, p)
        return outside
    return place


def _plain(name: str, directory: bool = False):
    """A regular file (or a directory) where the run keeps the other kind."""
    def place(run: Path, tmp: Path) -> None:
        p = run / name
        p.unlink(missing_ok=True)
        p.mkdir() if directory else p.write_text("not a directory\n")
    return place


# case -> (the entry of the run directory, what is placed there, a new run (--out) or --resume)
RUN_FILE_CASES = {
    "lock-link-resume": (LOCK_NAME, _link(LOCK_NAME), "resume"),
    "lock-link-new": (LOCK_NAME, _link(LOCK_NAME), "new"),
    "lock-dangling-link-new": (LOCK_NAME, _link(LOCK_NAME, dangling=True), "new"),
    "lock-dangling-link-resume": (LOCK_NAME, _link(LOCK_NAME, dangling=True), "resume"),
    "lock-fifo-resume": (LOCK_NAME, _fifo(LOCK_NAME), "resume"),
    "lock-directory-resume": (LOCK_NAME, _plain(LOCK_NAME, directory=True), "resume"),
    "metrics-dangling-link-resume": ("metrics.jsonl", _link("metrics.jsonl", dangling=True), "resume"),
    "metrics-link-resume": ("metrics.jsonl", _link("metrics.jsonl"), "resume"),
    "metrics-fifo-resume": ("metrics.jsonl", _fifo("metrics.jsonl"), "resume"),
    "metrics-directory-resume": ("metrics.jsonl", _plain("metrics.jsonl", directory=True), "resume"),
    "config-link-resume": ("config.yaml", _link("config.yaml"), "resume"),
    "summary-link-resume": ("summary.json", _link("summary.json"), "resume"),
    "summary-dangling-link-resume": ("summary.json", _link("summary.json", dangling=True), "resume"),
    "tokenizer-link-resume": ("tokenizer.json", _link("tokenizer.json"), "resume"),
    "tb-link-resume": ("tb", _dir_link("tb"), "resume"),
    "checkpoints-link-resume": ("checkpoints", _dir_link("checkpoints"), "resume"),
    "checkpoints-file-new": ("checkpoints", _plain("checkpoints"), "new"),
    "checkpoints-link-new": ("checkpoints", _dir_link("checkpoints"), "new"),
    "checkpoints-fifo-new": ("checkpoints", _fifo("checkpoints"), "new"),
    "tb-file-new": ("tb", _plain("tb"), "new"),
    "metrics-dangling-link-new": ("metrics.jsonl", _link("metrics.jsonl", dangling=True), "new"),
    "summary-fifo-new": ("summary.json", _fifo("summary.json"), "new"),
}


def _bytes_and_mtime(p: Path):
    return (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None


@pytest.mark.parametrize("case", list(RUN_FILE_CASES))
def test_a_run_never_writes_through_a_link_or_into_a_pipe(case, tiny_run, resumable, tmp_path):
    name, place, mode = RUN_FILE_CASES[case]
    if mode == "new":
        run = tmp_path / "out"
        run.mkdir()
        (run / "notes.txt").write_text("the user's directory\n")
    else:
        run = resumable
    target = place(run, tmp_path)
    before = _bytes_and_mtime(target) if isinstance(target, Path) and target.is_file() else None
    args = (("pretrain", "--resume", run, "--max-steps", 3) if mode == "resume" else
            ("pretrain", "--preset", "llama-tiny", "--data", tiny_run / "corpus", *TINY_RUN, "--max-steps", 1,
             "--out", run, "--cache-dir", tiny_run / "cache"))
    refused_cli(tmp_path, (*args, "--quiet"), "WS208", 2, says=name)  # nothing under tmp_path changed either
    if isinstance(target, Path) and target.suffix == ".txt":
        assert _bytes_and_mtime(target) == before  # a dangling link's target stays absent (None)


def _nested_gguf(src: Path, out: Path, depth: int) -> Path:
    """``src`` with one more metadata entry: an array of an array of ... ``depth`` deep."""
    from warmstart.checkpoint.gguf.parse import read_gguf_header
    from warmstart.checkpoint.gguf.write import copied_kv, write_gguf_with_metadata

    header, raw = read_gguf_header(src, skip_string_arrays=False)
    key = b"general.nested"
    deep = struct.pack("<Q", len(key)) + key + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * depth \
        + struct.pack("<IQ", 0, 0)
    entries = [copied_kv(header, raw, k) for k in header.metadata] + [deep]
    write_gguf_with_metadata(src, header, raw, entries, out)
    return out


NESTING_CASES = {
    "gguf-nested-100000-inspect": ("inspect",),
    "gguf-nested-100000-validate": ("validate",),
    "gguf-nested-100000-init": ("pretrain", "--max-steps", 1, "--init"),
}


@pytest.mark.parametrize("case", list(NESTING_CASES))
def test_gguf_metadata_nested_without_end_is_refused(case, gguf, tmp_path):
    bad = _nested_gguf(gguf, tmp_path / "nested.gguf", 100_000)
    refused_cli(tmp_path, (*NESTING_CASES[case], bad), "WS101", 2, says="nests arrays")


def test_gguf_metadata_nested_a_little_still_reads(gguf, tmp_path):
    ok = _nested_gguf(gguf, tmp_path / "nested.gguf", 3)
    o = cli("inspect", ok)
    assert o.exit == 0, o.text


# ------------------------------------------------------------------ every file a run opens


class _Opens:
    """The ``open`` audit events under ``root`` while ``on``: (path, flags, whether it was a link then)."""

    def __init__(self) -> None:
        self.root: str | None = None
        self.seen: list[tuple[str, int, bool]] = []

    def __call__(self, event: str, args) -> None:
        if event != "open" or self.root is None or not isinstance(args[0], (str, os.PathLike)):
            return
        path = os.path.abspath(os.fspath(args[0]))
        if path.startswith(self.root + os.sep):
            flags = args[2] if isinstance(args[2], int) else 0
            self.seen.append((path, flags, os.path.islink(path)))


_OPENS = _Opens()
sys.addaudithook(_OPENS)  # audit hooks cannot be removed: it records only while a root is set


def test_no_file_a_run_writes_is_opened_through_a_link(tiny_run, tmp_path):
    """A new run and its resume, in-process: every file opened under the run directory was no link when opened,
    each one opened in place (not a temporary name it created, not in a staging directory) carried O_NOFOLLOW,
    and after the run nothing under the directory is a link."""
    run = tmp_path / "run"
    _OPENS.root = str(run.resolve())
    try:
        for args in (("--preset", "llama-tiny", "--data", tiny_run / "corpus", *TINY_RUN, "--max-steps", 2,
                      "--save-every", 1, "--out", run, "--cache-dir", tiny_run / "cache"),
                     ("--resume", run, "--max-steps", 3)):
            o = cli("pretrain", *args, "--quiet")
            assert o.exit == 0, o.text
    finally:
        _OPENS.root = None
    writes = [(p, f) for p, f, link in _OPENS.seen if f & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT)]
    assert not [p for p, _, link in _OPENS.seen if link]
    names = {Path(p).name for p, _ in writes}
    assert {LOCK_NAME, "metrics.jsonl"} <= names  # opened in place
    assert any(n.startswith(".config.yaml.") for n in names) and any(n.startswith(".latest.") for n in names)
    created: set[str] = set()  # made by an O_EXCL | O_CREAT open (mkstemp), which never follows a link
    for path, flags in writes:
        if flags & os.O_EXCL and flags & os.O_CREAT:
            created.add(path)
        staged = ".partial-" in path  # inside a staging directory this run made (atomic_dir)
        assert path in created or staged or flags & os.O_NOFOLLOW, (path, oct(flags))
    for dirpath, dirnames, filenames in os.walk(run):
        for name in dirnames + filenames:
            assert not stat.S_ISLNK(os.lstat(Path(dirpath) / name).st_mode), Path(dirpath) / name


def test_every_entry_a_run_writes_has_a_case():
    assert set(ENTRIES) == {name for name, _, _ in RUN_FILE_CASES.values()}
