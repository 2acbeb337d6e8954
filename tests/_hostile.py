"""The hostile-input suite's tools (tests/hostile): the CLI run in-process, the outcome checks every case
makes, and edits of real files (checkpoint configs, safetensors headers, GGUF metadata).

A case asserts (``refused``): exit 1 or 2, the documented code (it must appear in docs/errors.md), no
traceback, no WS999, nothing left behind (the files under the case's directory are exactly those before
the command, same sizes and times) and under 10 s.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import stat
import struct
import time
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
DOCUMENTED = set(re.findall(r"^\| (WS\d{3}) \|", DOCS.read_text(encoding="utf-8"), flags=re.M))
LIMIT_S = 10.0
# the settings of the tiny scratch runs the suite makes (hostile/conftest.py ``tiny_run``)
TINY_RUN = ("--vocab-size", 300, "--seq-len", 16, "--batch-size", 2, "--eval-tokens", 32, "--eval-every", 0)


@dataclass
class Outcome:
    exit: int
    out: str
    err: str
    seconds: float

    @property
    def text(self) -> str:
        return self.out + self.err


class Hung(Exception):
    """A command ran past the time limit (a hang: an open FIFO, a read without end)."""


def _alarm(signum, frame):
    raise Hung(f"the command ran past {HANG_S} s")


HANG_S = 30  # a case that runs this long is a hang: the alarm stops it (the case then fails)


def cli(*args, env: dict | None = None) -> Outcome:
    """``warmstart ARGS`` in-process: the console script's entry point, stdout/stderr captured; a command
    that hangs is interrupted after ``HANG_S`` seconds (SIGALRM) and fails the case."""
    from warmstart.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_S)
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([str(a) for a in args])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Outcome(code, out.getvalue(), err.getvalue(), time.perf_counter() - t0)


def listing(root: Path, skip: tuple[str, ...] = ("cache",)) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` (not following links) with its size and mtime; ``skip``: top-level names."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            is_dir = stat.S_ISDIR(st.st_mode)  # a directory counts by its entries, not its times
            out[str(p.relative_to(root))] = (0, 0) if is_dir else (st.st_size, st.st_mtime_ns)
    return out


def assert_clean(o: Outcome) -> None:
    assert "Traceback" not in o.text, o.text
    assert "[WS999]" not in o.text, o.text
    assert o.seconds < LIMIT_S, f"took {o.seconds:.1f}s"


@dataclass
class Snapshot:
    """The files under ``root`` now (``listing``), to compare with after a command."""

    root: Path
    files: dict

    @classmethod
    def of(cls, root: Path) -> "Snapshot":
        return cls(Path(root), listing(Path(root)))

    def assert_unchanged(self) -> None:
        now = listing(self.root)
        added = sorted(set(now) - set(self.files))
        changed = sorted(k for k in self.files if now.get(k) != self.files[k])
        assert not added and not changed, f"left behind {added}, changed or removed {changed}"


def refused(o: Outcome, code: str, exit_code: int | None = None, *, before: Snapshot | None = None,
            says: str | tuple[str, ...] = ()) -> Outcome:
    """The command refused: exit 1/2 (``exit_code`` if given), ``[code]`` shown and documented, no traceback,
    no WS999, under 10 s, and (``before``) nothing left behind and no input changed."""
    assert code in DOCUMENTED, f"{code} is not documented in docs/errors.md"
    assert_clean(o)
    assert o.exit in (1, 2), (o.exit, o.text)
    if exit_code is not None:
        assert o.exit == exit_code, (o.exit, o.text)
    assert f"[{code}]" in o.text, o.text
    for s in (says,) if isinstance(says, str) else says:
        assert s in o.text, (s, o.text)
    if before is not None:
        before.assert_unchanged()
    return o


def refused_cli(root: Path, args, code: str, exit_code: int | None = None, *,
                says: str | tuple[str, ...] = ()) -> Outcome:
    """``warmstart ARGS`` refused as ``refused`` asserts, leaving nothing behind under ``root`` and changing
    nothing there (its snapshot is taken just before the command runs)."""
    before = Snapshot.of(root)
    return refused(cli(*args), code, exit_code, before=before, says=says)


# ------------------------------------------------------------------ editing real files


def edit_config(ckpt_dir: Path, name: str = "config.json", **changes) -> None:
    """Set keys of a JSON file (value ``DROP`` removes the key)."""
    p = ckpt_dir / name
    cfg = json.loads(p.read_text())
    for k, v in changes.items():
        if v is DROP:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    p.write_text(json.dumps(cfg, indent=2))


DROP = object()


def st_header(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def st_rewrite(path: Path, header_text: str, data: bytes) -> None:
    """A safetensors file with this exact header text (padded to 8 bytes) and data section."""
    h = header_text.encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


def gguf_rewrite(path: Path, *, set_: dict | None = None, drop: tuple[str, ...] = (), dup: tuple[str, ...] = (),
                 out: Path | None = None) -> Path:
    """The GGUF with metadata entries replaced (``set_``: key -> (GGUF value type, value)), dropped or duplicated;
    tensor infos and data copied byte for byte."""
    from warmstart.checkpoint.gguf.parse import read_gguf_header
    from warmstart.checkpoint.gguf.write import copied_kv, encode_kv, write_gguf_with_metadata

    header, raw = read_gguf_header(path, skip_string_arrays=False)
    set_ = dict(set_ or {})
    entries = []
    for key in header.metadata:
        if key in drop:
            continue
        entries.append(encode_kv(key, set_[key][1], set_[key][0]) if key in set_ else copied_kv(header, raw, key))
        if key in dup:
            entries.append(copied_kv(header, raw, key))
    entries += [encode_kv(k, v, t) for k, (t, v) in set_.items() if k not in header.metadata]
    target = out or path
    tmp = target.with_name(target.name + ".new")
    write_gguf_with_metadata(path, header, raw, entries, tmp)
    os.replace(tmp, target)
    return target


def gguf_retable(path: Path, edit) -> Path:
    """The GGUF with its tensor infos edited: ``edit(list of [name, ggml dims, type id, offset])`` changes the
    list in place; metadata and data copied byte for byte."""
    from warmstart.checkpoint.gguf.parse import GGUF_MAGIC, read_gguf_header

    header, raw = read_gguf_header(path, skip_string_arrays=False)
    infos = [list(i) for i in header.infos]
    edit(infos)
    table = b""
    for name, dims, type_id, offset in infos:
        n = name.encode()
        table += struct.pack("<Q", len(n)) + n + struct.pack("<I", len(dims))
        table += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", type_id, offset)
    kv = raw[24:header.tensor_info_span[0]]
    blob = GGUF_MAGIC + struct.pack("<IQQ", header.version, len(infos), len(header.metadata)) + kv + table
    blob += b"\0" * (-len(blob) % header.alignment)
    data = path.read_bytes()[header.data_start:]
    path.write_bytes(blob + data)
    return path
