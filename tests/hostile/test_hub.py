"""Hostile local Hugging Face caches behind ``ORG/NAME[@REVISION]`` ids: refs that are binary, garbage, empty,
huge, FIFOs, devices or loops; snapshots, the model's directory or the cache itself a file, a FIFO or a loop;
revisions that climb out of ``refs/``; blobs that are FIFOs, devices, loops or missing. Each is refused with its
code (WS130 a damaged cache, WS003 a special file, WS004 a loop, WS002 a bad revision, WS101 not cached) by every
command that takes an id, in seconds, never as WS999, nothing left behind; a damaged neighbour in the same
cache does not stop an id that is sound.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from _ckpt_tools import add_to_cache
from _hostile import cli, refused_cli

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"
FAST = ("inspect", "validate")
ALL = ("inspect", "validate", "eval", "init", "stamp")


def command(name: str, spec: str, tmp: Path, text: Path) -> list:
    return {
        "inspect": ["inspect", spec],
        "validate": ["validate", spec],
        "eval": ["eval", spec, "--data", text, "--max-tokens", 64, "--seq-len", 32],
        "init": ["pretrain", "--init", spec, "--data", text, "--max-steps", 1, "--seq-len", 16, "--batch-size", 1,
                 "--eval-tokens", 16, "--out", tmp / "out"],
        "stamp": ["stamp", spec, "--license", "mit", "-o", tmp / "stamped"],
    }[name]


@dataclass
class Cache:
    root: Path  # $HF_HUB_CACHE
    repo: Path  # models--Org--Tiny
    snapshot: Path  # snapshots/COMMIT
    tmp: Path

    @property
    def main(self) -> Path:
        return self.repo / "refs" / "main"


@dataclass(frozen=True)
class Case:
    id: str
    damage: Callable[[Cache], str | None]  # -> the id to pass (None: Org/Tiny)
    code: str
    commands: tuple[str, ...] = FAST


def _replace(path: Path, kind: str, target: Path | None = None) -> None:
    """``path`` (file, link or directory) becomes a FIFO, a file, a directory or a link to ``target``."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "file":
        path.write_bytes(b"not a directory\n")
    elif kind == "dir":
        path.mkdir()
    elif kind == "link":
        os.symlink(target, path)
    elif kind == "loop":
        os.symlink(path.with_name(path.name + ".other"), path)
        os.symlink(path, path.with_name(path.name + ".other"))


def ref(data: bytes, name: str = "main", spec: str | None = None):
    def damage(c: Cache):
        p = c.repo / "refs" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return spec
    return damage


def becomes(where: Callable[[Cache], Path], kind: str, target: Path | None = None, spec: str | None = None):
    def damage(c: Cache):
        _replace(where(c), kind, target)
        return spec
    return damage


def _huge_ref(c: Cache):
    with open(c.main, "wb") as fh:
        fh.truncate(8 << 30)  # 8 GiB, sparse: refused from its size, never read


def _ref_to_huge_outside(c: Cache):
    big = c.tmp / "elsewhere.bin"
    with open(big, "wb") as fh:
        fh.truncate(1 << 30)
    _replace(c.main, "link", big)


def _blob_of(name: str):
    """The blob a snapshot file links to."""
    return lambda c: (c.snapshot / name).resolve()


def _cache_is(kind: str, target: Path | None = None):
    def damage(c: Cache):
        shutil.rmtree(c.root)
        _replace(c.root, kind, target)
    return damage


def _hf_home_hub_file(c: Cache):
    """$HF_HOME/hub (the cache when $HF_HUB_CACHE is not set) is a file."""
    (c.tmp / "hf-home").mkdir()
    (c.tmp / "hf-home" / "hub").write_text("not a cache")
    return "hf-home"  # the test sets HF_HOME and unsets HF_HUB_CACHE


def _missing_blob(c: Cache):
    _blob_of("config.json")(c).unlink()


CASES = [
    # refs: each a small regular file holding a commit hash, or refused
    Case("ref-binary", ref(b"\xff\xfe\x00\x81garbage\x00"), "WS130", ALL),
    Case("ref-nested-garbage", ref(b"[" * 100_000), "WS130", ALL),
    Case("ref-empty", ref(b""), "WS130"),
    Case("ref-a-word", ref(b"main\n"), "WS130"),
    Case("ref-short-hash", ref(COMMIT[:12].encode()), "WS130"),
    Case("ref-uppercase-hash", ref(COMMIT.upper().encode()), "WS130"),
    Case("ref-hash-and-more", ref(COMMIT.encode() + b"\nextra"), "WS130"),
    Case("ref-huge-sparse", lambda c: _huge_ref(c), "WS130", ALL),
    Case("ref-link-to-huge-file", _ref_to_huge_outside, "WS130"),
    Case("ref-fifo", becomes(lambda c: c.main, "fifo"), "WS003", ALL),
    Case("ref-dev-zero", becomes(lambda c: c.main, "link", Path("/dev/zero")), "WS003", ALL),
    Case("ref-symlink-loop", becomes(lambda c: c.main, "loop"), "WS004", ALL),
    Case("ref-names-no-snapshot", ref(OTHER.encode()), "WS130", ALL),
    Case("ref-tag-binary", ref(b"\x00\x01\x02", "v2", "Org/Tiny@v2"), "WS130"),
    Case("ref-pr-fifo", lambda c: (ref(b"", "refs/pr/1")(c), _replace(c.repo / "refs/refs/pr/1", "fifo"),
                                   "Org/Tiny@refs/pr/1")[-1], "WS003"),
    Case("ref-damaged-beside-an-uncached-revision", ref(b"\xff" * 10, "v2", "Org/Tiny@dev"), "WS130"),
    Case("refs-dir-is-a-file", becomes(lambda c: c.repo / "refs", "file"), "WS130"),
    Case("refs-dir-loop", becomes(lambda c: c.repo / "refs", "loop"), "WS004"),
    # revisions that are not names
    Case("revision-climbs-out", lambda c: "Org/Tiny@../../../etc/passwd", "WS002"),
    Case("revision-absolute", lambda c: "Org/Tiny@/etc/passwd", "WS002"),
    Case("revision-climbs-to-a-snapshot", lambda c: f"Org/Tiny@../snapshots/{COMMIT}", "WS002"),
    # snapshots, the model's directory, the cache itself
    Case("snapshot-symlink-loop", becomes(lambda c: c.snapshot, "loop"), "WS004", ALL),
    Case("snapshot-loop-by-prefix", becomes(lambda c: c.snapshot, "loop", spec=f"Org/Tiny@{COMMIT[:9]}"), "WS004"),
    Case("snapshot-is-a-file", becomes(lambda c: c.snapshot, "file"), "WS130"),
    Case("snapshot-fifo", becomes(lambda c: c.snapshot, "fifo"), "WS003"),
    Case("snapshot-dev-null", becomes(lambda c: c.snapshot, "link", Path("/dev/null")), "WS003"),
    Case("snapshots-dir-is-a-file", becomes(lambda c: c.repo / "snapshots", "file"), "WS130"),
    Case("snapshots-dir-loop", becomes(lambda c: c.repo / "snapshots", "loop"), "WS004"),
    Case("model-dir-loop", becomes(lambda c: c.repo, "loop"), "WS004", ALL),
    Case("model-dir-is-a-file", becomes(lambda c: c.repo, "file"), "WS130"),
    Case("model-dir-fifo", becomes(lambda c: c.repo, "fifo"), "WS003"),
    Case("model-dir-case-variant-loop", lambda c: (_replace(c.repo, "loop"), "org/tiny")[-1], "WS004"),
    Case("cache-is-a-file", _cache_is("file"), "WS130", ALL),
    Case("cache-symlink-loop", _cache_is("loop"), "WS004", ALL),
    Case("cache-is-dev-null", _cache_is("link", Path("/dev/null")), "WS003"),
    Case("cache-fifo", _cache_is("fifo"), "WS003"),
    Case("hf-home-hub-is-a-file", _hf_home_hub_file, "WS130"),
    # the files of a snapshot: links into blobs/
    Case("snapshot-config-loop", becomes(lambda c: c.snapshot / "config.json", "loop"), "WS004", ALL),
    Case("snapshot-weights-loop", becomes(lambda c: c.snapshot / "model.safetensors", "loop"), "WS004"),
    Case("blob-config-fifo", becomes(_blob_of("config.json"), "fifo"), "WS003", ALL),
    Case("blob-weights-fifo", becomes(_blob_of("model.safetensors"), "fifo"), "WS003"),
    Case("snapshot-weights-dev-zero", becomes(lambda c: c.snapshot / "model.safetensors", "link", Path("/dev/zero")),
         "WS003"),
    Case("blob-weights-directory", becomes(_blob_of("model.safetensors"), "dir"), "WS101"),
    Case("blob-weights-truncated", lambda c: (_blob_of("model.safetensors")(c).write_bytes(b"\x08" + b"\0" * 7),
                                              None)[-1], "WS101"),
]

PARAMS = [pytest.param(case, name, id=f"{case.id}-{name}") for case in CASES for name in case.commands]


@pytest.fixture
def cache(tmp_path, hf_base, monkeypatch) -> Cache:
    """Org/Tiny (the hostile suite's llama-tiny) at main, in the real layout, as $HF_HUB_CACHE."""
    root = tmp_path / "hf-cache"
    snapshot = add_to_cache(root, "Org/Tiny", hf_base, COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    return Cache(root, root / "models--Org--Tiny", snapshot, tmp_path)


@pytest.mark.parametrize("case,name", PARAMS)
def test_hostile_hub_cache(case: Case, name: str, cache: Cache, tmp_path, text, monkeypatch):
    spec = case.damage(cache)
    if spec == "hf-home":
        monkeypatch.delenv("HF_HUB_CACHE")
        monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        spec = None
    refused_cli(tmp_path, command(name, spec or "Org/Tiny", tmp_path, text), case.code)


# ------------------------------------------------------------------ what is accepted


def test_a_damaged_neighbour_does_not_stop_a_sound_id(cache: Cache, hf_base):
    """Only the named model's directory is read: another model's FIFO ref, looping snapshot and stray file
    at the top of the cache are never opened."""
    add_to_cache(cache.root, "Other/Broken", hf_base, OTHER)
    broken = cache.root / "models--Other--Broken"
    _replace(broken / "refs" / "main", "fifo")
    _replace(broken / "snapshots" / OTHER, "loop")
    (cache.root / "stray.txt").write_text("x")
    o = cli("inspect", "Org/Tiny")
    assert o.exit == 0 and f"snapshots/{COMMIT}" in o.out, o.text


def test_a_ref_with_a_trailing_newline_and_a_hand_made_tag_are_read(cache: Cache):
    cache.main.write_text(COMMIT + "\n")
    (cache.repo / "refs" / "v1").write_text(COMMIT)
    for spec in ("Org/Tiny", "Org/Tiny@v1", f"Org/Tiny@{COMMIT[:7]}", "ORG/tiny"):
        o = cli("inspect", spec)
        assert o.exit == 0 and f"snapshots/{COMMIT}" in o.out, (spec, o.text)


def test_not_cached_lists_what_the_cache_holds(cache: Cache):
    (cache.repo / "refs" / "refs" / "pr").mkdir(parents=True)
    (cache.repo / "refs" / "refs" / "pr" / "1").write_text(COMMIT)
    o = refused_cli(cache.tmp, ["inspect", "Org/Tiny@dev"], "WS101", 2)
    assert f"main, refs/pr/1 ({COMMIT[:12]})" in o.text and "hf download Org/Tiny --revision dev" in o.text, o.text
