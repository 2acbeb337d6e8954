"""Atomic writes: single files and whole Hugging Face checkpoint directories.

Every file is written under a temporary name in the destination's directory,
fsynced, renamed into place, and the directory fsynced. A checkpoint directory is
built entirely under a temporary sibling name and renamed into place in one step,
so a crash at any moment leaves either the previous directory or the new one,
never a partial one.

A write the operating system refuses (a full disk, a quota, EIO, a read-only filesystem) becomes
one typed error here, wherever it happens under these helpers (``writing``): WS230 when space ran
out, WS231 otherwise, naming the file as the user knows it (not its temporary name) and the space
left. The failed write's temporary file or staging directory is removed first, so what was there
before (a previous checkpoint, ``latest``, a user's file) is all that remains. The Rust writers
(safetensors, tokenizers) report the OS error as text ``(os error N)``; ``os_error`` reads it back.

Test hook: ``WARMSTART_TEST_WRITE_FAULT=ERRNO:GLOB`` (``ENOSPC:*/latest``) makes every write of a
file whose path matches GLOB fail with that errno after half of its bytes were written, at the
point where the OS would report it (``inject_fault``); unset, it does nothing.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from warmstart.arch.config import ModelConfig
from warmstart.errors import DiskFullError, UsageError, WarmstartError, WriteFailedError

# ---------------------------------------------------------------- failed writes

FAULT_ENV = "WARMSTART_TEST_WRITE_FAULT"  # tests: "ERRNO:GLOB" fails each write of a matching path
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # WS230; every other errno of a write is WS231 ...
_PATH_ERRORS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR}  # ... but these: WS001
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")
_SHORT_WRITE = re.compile(r"^(\d+) requested and \d+ written$")


def os_error(err: BaseException) -> OSError | None:
    """The OS error behind a failed write: an ``OSError``, or the I/O error a Rust writer (safetensors,
    tokenizers) reports as text ending ``(os error N)``."""
    if isinstance(err, OSError):
        return err if err.errno is not None else None
    if isinstance(err, WarmstartError) or not isinstance(err, Exception):
        return None
    m = _RUST_OS_ERROR.search(str(err))
    return OSError(int(m.group(1)), os.strerror(int(m.group(1)))) if m else None


def _short_write(err: BaseException, path: Path) -> OSError | None:
    """numpy's ``tofile`` (gguf's tensor writer) reports a write the disk cut short as an OSError without an
    errno, ``N requested and M written``: ENOSPC when the filesystem has less than N bytes left, else EIO."""
    m = _SHORT_WRITE.search(str(err)) if isinstance(err, OSError) and err.errno is None else None
    if m is None:
        return None
    free = next((shutil.disk_usage(p).free for p in (path, *path.parents) if os.path.exists(p)), 0)
    code = errno.ENOSPC if free < int(m.group(1)) else errno.EIO
    return OSError(code, f"{os.strerror(code)} (a short write: {err})")


def public_path(path: str | os.PathLike) -> Path:
    """``path`` as the user knows it: a staging directory or temporary file in it named by its final name."""
    parts = [(_TEMP.match(p)["name"] if _TEMP.match(p) else p) for p in Path(path).parts]
    return Path(*parts) if parts else Path(path)


def _space(path: Path) -> str:
    """``; 1.2 MiB free of 20.0 MiB there`` for the filesystem holding ``path`` (or nothing)."""
    for p in (path, *path.parents):
        try:
            total, _used, free = shutil.disk_usage(p)
        except OSError:
            continue
        return f"; {_size(free)} free of {_size(total)} there"
    return ""


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def write_failure(path: str | os.PathLike, err: OSError, *, who: str = "") -> WriteFailedError:
    """The typed error of a write of ``path`` the OS refused with ``err``: WS230 when space ran out,
    else WS231. ``who``: a prefix for the found text (``rank 1: ``)."""
    shown = public_path(path)
    name = errno.errorcode.get(err.errno or 0, str(err.errno))
    kept = "Nothing half-written was kept; what was there before is unchanged"
    if err.errno in _FULL:
        return DiskFullError(f"{who}no space left on the device while writing it ({name}{_space(shown)})",
                             why=kept, fix="free space there or write to another filesystem, then run the "
                             "command again (a training run: --resume it)", path=shown)
    return WriteFailedError(f"{who}the operating system refused the write: {err.strerror or err} ({name})",
                            why=kept, fix="check the device and the filesystem (the kernel log, fsck, whether it "
                            "is mounted read-only) or write to another filesystem, then run the command again",
                            path=shown)


def as_write_failure(err: BaseException, path: str | os.PathLike) -> BaseException | None:
    """What a failed write of ``path`` raises instead of ``err``: WS230/WS231, or the ``OSError`` a Rust
    writer's text stands for when it is a path error (missing, permissions: the CLI's WS001); None when
    ``err`` is not an OS error (it is raised as it is)."""
    oserr = os_error(err) or _short_write(err, Path(path))
    if oserr is None:
        return None
    if oserr.errno in _PATH_ERRORS:
        return None if oserr is err else oserr
    return write_failure(path, oserr)


def write_only_failure(err: BaseException) -> WriteFailedError | None:
    """WS230/WS231 for an OS error only a write raises (no space, a quota, a file-size limit, a read-only
    filesystem) that escaped the helpers here (the CLI's last resort); None for any other exception."""
    if not isinstance(err, OSError) or err.errno not in (*_FULL, errno.EROFS):
        return None
    return write_failure(err.filename or "(a file being written)", err)


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """An OS error in the block (a write of ``path``) is raised as ``as_write_failure`` says."""
    try:
        yield
    except BaseException as err:
        failure = as_write_failure(err, path)
        if failure is None:
            raise
        raise failure from None


def inject_fault(path: str | os.PathLike, written: str | os.PathLike | None = None) -> None:
    """Test hook (``FAULT_ENV``, off unless set): the write of ``path`` fails as a full or failing disk
    makes it fail, with half of the bytes written so far (in ``written``) left behind."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    name, _, pattern = spec.partition(":")
    if not fnmatch.fnmatchcase(Path(path).as_posix(), pattern):
        return
    code = getattr(errno, name)
    if written is not None and os.path.isfile(written):
        os.truncate(written, os.path.getsize(written) // 2)
    raise OSError(code, os.strerror(code), str(path))


# ---------------------------------------------------------------- primitives


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory so that renames inside it are durable (no-op where unsupported)."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


# ------------------------------------------------------ temporary names of killed writes

_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:16] or "host"


def owner_tag() -> str:
    """``HOST-PID``: put in every temporary name, so a later write can tell a killed writer's leftovers."""
    return f"{_HOST}-{os.getpid()}"


def _gone(tag: str) -> bool:
    """The writer ``HOST-PID`` ran on this host and is no longer alive."""
    host, _, pid = tag.rpartition("-")
    if host != _HOST or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


_TEMP = re.compile(r"^\.(?P<name>.+)\.(?:(?P<kind>partial|old|replaced)-)?(?P<tag>[A-Za-z0-9]+-\d+)[.-][0-9a-z_]+"
                   r"(?:\.tmp)?$")


def clean_stale(path: str | os.PathLike) -> list[Path]:
    """Remove what a killed write to ``path`` left beside it (``atomic_path``'s temporary file,
    ``atomic_dir``'s staging directory, export's set-aside output), when its writer is gone. A previous
    directory a killed swap had set aside (``.old-``) is put back when ``path`` itself is missing."""
    path = Path(path)
    removed = []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return removed
    for p in siblings:
        m = _TEMP.match(p.name)
        if not m or m["name"] != path.name or not _gone(m["tag"]):
            continue
        if m["kind"] in ("old", "replaced") and not os.path.lexists(path):
            os.replace(p, path)  # the killed write had set the previous version aside: it comes back
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it into place.

    The temporary file gets the usual permissions (0666 & ~umask, not mkstemp's 0600).
    On any failure it is removed and ``path`` is left as it was (an OS error: WS230/WS231,
    ``writing``); what a killed earlier write to ``path`` left is removed first (``clean_stale``).
    """
    path = Path(path)
    with writing(path), _parents(path) as made:
        clean_stale(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{owner_tag()}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            yield Path(tmp)
            inject_fault(path, tmp)
            os.chmod(tmp, _default_mode())
            fsync_file(Path(tmp))
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        made.clear()  # written: the directories stay
        fsync_dir(path.parent)


@contextlib.contextmanager
def _parents(path: Path) -> Iterator[list[Path]]:
    """Create the missing parent directories of ``path``; those still listed when the block fails are
    removed again (when empty), so a failed write leaves no directory behind either."""
    made = [p for p in reversed(path.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield made
    except BaseException:
        for p in reversed(made):
            with contextlib.suppress(OSError):
                p.rmdir()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: temp file in the same dir, fsync, rename, fsync dir."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.dtype):
        return str(obj).removeprefix("torch.")
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_json_durable(path: Path, obj: Any) -> None:
    """Plain write + fsync, for files inside a staging directory (renamed as a whole later)."""
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
    with writing(path):
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            inject_fault(path, path)
            os.fsync(fh.fileno())


def fsync_file(path: str | os.PathLike) -> None:
    with writing(path), open(path, "rb") as fh:
        os.fsync(fh.fileno())


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> None:
    """safetensors' ``save_file`` + fsync, for a file inside a staging directory (renamed as a whole later)."""
    with writing(path):
        save_file(tensors, str(path), metadata=metadata if metadata is not None else {"format": "pt"})
        inject_fault(path, path)
        fsync_file(path)


def save_tokenizer(tokenizer, path: str | os.PathLike) -> None:
    """A ``tokenizers.Tokenizer`` as ``tokenizer.json`` + fsync, inside a staging directory."""
    with writing(path):
        tokenizer.save(str(path))
        inject_fault(path, path)
        fsync_file(path)


# ------------------------------------------------------------- safetensors


def save_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                     metadata: dict[str, str] | None = None) -> Path:
    """Write a safetensors file atomically. Tensors are made contiguous, CPU, detached.

    Tensors that share storage (e.g. a tied head) must be deduplicated by the caller;
    safetensors refuses shared storage rather than writing it twice.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "pt"}
    if metadata:
        meta.update({str(k): str(v) for k, v in metadata.items()})
    clean = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata=meta)
    return path


def _dedupe_tied(state_dict: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    sd = dict(state_dict)
    if cfg.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    return sd


# ----------------------------------------------------------- tokenizer files


def tokenizer_config_for(tokenizer, cfg: ModelConfig) -> dict:
    """A ``tokenizer_config.json`` that makes AutoTokenizer build a PreTrainedTokenizerFast."""

    def tok(idx: int | None) -> str | None:
        if idx is None:
            return None
        return tokenizer.id_to_token(int(idx))

    added = {}
    for idx, tok_obj in sorted(tokenizer.get_added_tokens_decoder().items()):
        added[str(idx)] = {
            "content": tok_obj.content,
            "lstrip": tok_obj.lstrip,
            "normalized": tok_obj.normalized,
            "rstrip": tok_obj.rstrip,
            "single_word": tok_obj.single_word,
            "special": tok_obj.special,
        }
    out = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": cfg.max_position_embeddings,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": added,
    }
    for key, idx in (("bos_token", cfg.bos_token_id), ("eos_token", cfg.eos_token_id),
                     ("pad_token", cfg.pad_token_id)):
        name = tok(idx)
        if name is not None:
            out[key] = name
    return out


def generation_config_for(cfg: ModelConfig) -> dict:
    gen: dict[str, Any] = {"_from_model_config": True}
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        val = getattr(cfg, key)
        if val is not None:
            gen[key] = val
    return gen


# --------------------------------------------------------- checkpoint dirs


def save_hf_checkpoint(
    out_dir: str | os.PathLike,
    cfg: ModelConfig,
    state_dict: dict[str, torch.Tensor],
    *,
    tokenizer=None,
    provenance: dict | None = None,
    generation_config: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a Hugging Face-compatible checkpoint directory atomically (``write_hf_files``
    inside ``atomic_dir``).

    An existing ``out_dir`` is refused unless ``overwrite=True``; then the old directory
    is first renamed aside, the new one renamed in, and only then the old one removed,
    so at every moment one complete checkpoint sits at ``out_dir`` or its aside name.
    """
    with atomic_dir(out_dir, overwrite=overwrite) as staging:
        write_hf_files(staging, cfg, state_dict, tokenizer=tokenizer, provenance=provenance,
                       generation_config=generation_config)
    return Path(out_dir)


def write_hf_files(
    directory: Path,
    cfg: ModelConfig,
    state_dict: dict[str, torch.Tensor],
    *,
    tokenizer=None,
    provenance: dict | None = None,
    generation_config: dict | None = None,
) -> None:
    """Write the HF checkpoint files into ``directory`` (normally an ``atomic_dir`` staging dir).

    Contents: ``config.json`` (``cfg.to_hf_config()``), ``model.safetensors`` (HF names,
    contiguous, tied ``lm_head.weight`` dropped), ``tokenizer.json`` +
    ``tokenizer_config.json`` when ``tokenizer`` (a ``tokenizers.Tokenizer``) is given,
    ``generation_config.json``, and ``warmstart.json`` when ``provenance`` is given.
    Every file is fsynced.
    """
    write_json_durable(directory / "config.json", cfg.to_hf_config(_dtype_name(state_dict)))
    tensors = _dedupe_tied(state_dict, cfg)
    clean = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    save_tensors(directory / "model.safetensors", clean)
    del clean
    if tokenizer is not None:
        save_tokenizer(tokenizer, directory / "tokenizer.json")
        write_json_durable(directory / "tokenizer_config.json", tokenizer_config_for(tokenizer, cfg))
    write_json_durable(directory / "generation_config.json",
                       generation_config if generation_config is not None else generation_config_for(cfg))
    if provenance is not None:
        write_json_durable(directory / "warmstart.json", provenance)


@contextlib.contextmanager
def atomic_dir(out_dir: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory beside ``out_dir``; on success rename it into place.

    Files written inside must be fsynced by the caller; the staging directory and the
    parent are fsynced here. On failure the staging directory is removed and ``out_dir``
    is untouched (an OS error in the block: WS230/WS231, ``writing``). With ``overwrite``
    an existing ``out_dir`` is swapped out safely.
    """
    out_dir = Path(out_dir)
    with writing(out_dir), _parents(out_dir) as made, _staging(out_dir, overwrite) as staging:
        yield staging
        made.clear()


@contextlib.contextmanager
def _staging(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """``atomic_dir``'s staging directory: made, yielded, renamed into place or removed."""

    def refuse_existing() -> None:
        if out_dir.exists() and not overwrite:
            raise UsageError(f"output directory {out_dir} already exists", path=out_dir,
                             why="warmstart never replaces a directory unless asked",
                             fix="choose another output path, or pass overwrite=True / --overwrite")
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"{out_dir} exists and is not a directory", path=out_dir,
                             fix="choose another output path")

    clean_stale(out_dir)  # a killed earlier write's staging goes; its set-aside directory comes back
    refuse_existing()  # before any work; again before the rename (it may have appeared meanwhile)
    token = f"{owner_tag()}-{uuid.uuid4().hex[:8]}"
    staging = out_dir.parent / f".{out_dir.name}.partial-{token}"
    staging.mkdir()
    try:
        yield staging
        fsync_dir(staging)
        refuse_existing()
        _swap_into_place(staging, out_dir, token)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _dtype_name(state_dict: dict[str, torch.Tensor]) -> str:
    for t in state_dict.values():
        if t.is_floating_point():
            return str(t.dtype).removeprefix("torch.")
    return "float32"


def _swap_into_place(staging: Path, out_dir: Path, token: str) -> None:
    parent = out_dir.parent
    if out_dir.exists():
        aside = parent / f".{out_dir.name}.old-{token}"
        os.replace(out_dir, aside)
        fsync_dir(parent)
        try:
            os.replace(staging, out_dir)
        except BaseException:
            os.replace(aside, out_dir)  # put the previous checkpoint back
            raise
        fsync_dir(parent)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(staging, out_dir)
        fsync_dir(parent)


__all__ = [
    "FAULT_ENV", "as_write_failure", "atomic_dir", "atomic_path", "clean_stale", "owner_tag", "atomic_write_bytes",
    "fsync_file", "atomic_write_json", "atomic_write_text", "fsync_dir", "generation_config_for", "inject_fault",
    "os_error", "public_path", "save_hf_checkpoint", "save_safetensors", "save_tensors", "save_tokenizer",
    "tokenizer_config_for", "write_failure", "write_hf_files", "write_json_durable", "write_only_failure",
    "writing",
]
