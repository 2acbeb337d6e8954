"""The manifest of a token cache entry: what it holds, read and checked in one place; what to tokenize.

An entry is a directory::

    manifest.json    this module's file (below)
    tokenizer.json   the tokenizer the ids belong to
    shards/          NAME.bin + NAME.idx per shard (``shards.py``)

``manifest.json`` records the tokenizer (sha256, vocabulary size, EOS id, id dtype), the settings
the split depends on, the sources' names (never absolute paths: an entry copied to another machine
is used as it is), every file of the corpus (key, size, mtime, sha256 of its content, what it holds,
the unit it went to or why it was skipped, its documents and bytes) and the units in corpus order,
each with its files and its shards' records (token and document counts per split, sha256, id range,
the ``.idx``'s size). The training stream is every unit's shards' training parts in that order, the
held-out stream their held-out parts. It is written atomically after each unit completes, so it
only ever names complete shards; it holds no times, so an interrupted and resumed ``prepare`` leaves
the same bytes as an uninterrupted one.

``plan`` compares the files found now with the manifest: files unchanged (same size and mtime, or
the same content after a ``touch``) keep their units; new and changed files, and the other files of
a unit that held a changed, removed or damaged file, are tokenized again, grouped into new units.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from warmstart.data.shards import shard_files
from warmstart.data.sources import SKIP, FileEntry
from warmstart.errors import DamagedCacheError

FORMAT = "warmstart-token-cache-v2"
OLD_FORMATS = ("warmstart-token-cache-v1",)
MANIFEST, TOKENIZER, SHARDS = "manifest.json", "tokenizer.json", "shards"
DTYPES = ("uint16", "uint32")
SAMPLE_IDS = 1 << 16  # ids read from each end of a shard when an entry is opened
SAMPLE_TOTAL = 1 << 25  # at most this many ids sampled per entry


def damaged(path: Path, found: str) -> DamagedCacheError:
    return DamagedCacheError(found, why="the token ids a run trains on must be exactly those the corpus gave",
                             fix="run `warmstart prepare` on the corpus again with --rebuild (an entry under the "
                             "cache directory is rebuilt by itself), or pass the raw corpus as --data", path=path)


def entry_key(roots: list[str], settings: dict, tokenizer_sha256: str) -> str:
    """The directory name of the entry for these sources (absolute paths), settings and tokenizer."""
    blob = json.dumps({"format": FORMAT, "roots": roots, "settings": settings, "tokenizer": tokenizer_sha256},
                      sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8", errors="surrogateescape")).hexdigest()[:20]


# ------------------------------------------------------------------ reading and checking

_TOP = {"format": str, "key": str, "tokenizer_sha256": str, "vocab_size": int, "eos_id": int, "dtype": str,
        "settings": dict, "sources": list, "units": list, "files": dict}
_SHARD = {"train_tokens": int, "val_tokens": int, "train_docs": int, "val_docs": int, "sha256": str,
          "idx_bytes": int, "candidates": list}


def _typed(value, typ) -> bool:
    return isinstance(value, typ) and not (typ is int and isinstance(value, bool)) and (typ is not int or value >= 0)


def _check_units(path: Path, units: list) -> None:
    for i, u in enumerate(units):
        if not (isinstance(u, dict) and isinstance(u.get("id"), str) and isinstance(u.get("shards"), list)
                and isinstance(u.get("files"), list)):
            raise damaged(path, f"the token cache's manifest.json holds a malformed unit (units[{i}])")
        for j, s in enumerate(u["shards"]):
            bad = [k for k, t in _SHARD.items() if not isinstance(s, dict) or not _typed(s.get(k), t)]
            if bad or not isinstance(s.get("name"), str) or "/" in s["name"] or s["name"].startswith("."):
                raise damaged(path, f"the token cache's manifest.json lacks or mistypes {', '.join(bad) or 'name'} "
                                    f"of units[{i}].shards[{j}]")


def read_manifest(entry: Path) -> dict:
    """The entry's manifest, every field of its type (DamagedCacheError, WS207, naming what is not)."""
    path = entry / MANIFEST
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise damaged(path, f"the token cache's manifest.json cannot be read ({err})") from None
    if isinstance(m, dict) and m.get("format") in OLD_FORMATS:
        raise damaged(path, "the token cache was written by an earlier warmstart (format "
                            f"{m['format']}), which this one does not read")
    bad = [k for k, t in _TOP.items() if not isinstance(m, dict) or not _typed(m.get(k), t)]
    if bad or m.get("format") != FORMAT:
        raise damaged(path, f"the token cache's manifest.json lacks or mistypes {', '.join(bad) or 'format'}")
    if m["dtype"] not in DTYPES:
        raise damaged(path, f"the token cache declares dtype {m['dtype']!r}; expected one of {', '.join(DTYPES)}")
    _check_units(path, m["units"])
    return m


def shard_problem(entry: Path, m: dict, s: dict, vocab: int) -> str | None:
    """What is wrong with shard ``s`` as its files stand (sizes; ids past the vocabulary), or None."""
    size = np.dtype(m["dtype"]).itemsize
    bin_name, idx_name = shard_files(s["name"])
    n = s["train_tokens"] + s["val_tokens"]
    for name, want in ((bin_name, n * size), (idx_name, s["idx_bytes"])):
        p = entry / SHARDS / name
        have = p.stat().st_size if p.is_file() else None
        if have != want:
            return (f"shards/{name} holds {have if have is not None else 'no'} bytes; manifest.json records "
                    f"{want} bytes" + (f" ({n} {m['dtype']} ids)" if name == bin_name else ""))
    top = s.get("id_max")
    if isinstance(top, int) and top >= vocab:
        return f"shards/{bin_name} holds token id {top}, past the tokenizer's {vocab} ids (manifest.json)"
    return None


def sample_problem(entry: Path, m: dict, s: dict, vocab: int, budget: list[int]) -> str | None:
    """Ids past the vocabulary in the first and last ``SAMPLE_IDS`` ids of a shard (a bounded sample)."""
    n = s["train_tokens"] + s["val_tokens"]
    if not n or budget[0] <= 0:
        return None
    ids = np.memmap(entry / SHARDS / shard_files(s["name"])[0], dtype=np.dtype(m["dtype"]), mode="r", shape=(n,))
    k = min(n, SAMPLE_IDS)
    budget[0] -= 2 * k
    top = max(int(ids[:k].max()), int(ids[n - k :].max()))
    if top >= vocab:
        return f"shards/{s['name']}.bin holds token id {top}, past the tokenizer's {vocab} ids"
    return None


def damaged_units(entry: Path, m: dict, vocab: int) -> dict[str, str]:
    """``{unit id: problem}`` of the units with a shard whose files are wrong (``shard_problem``,
    ``sample_problem``)."""
    out, budget = {}, [SAMPLE_TOTAL]
    for u in m["units"]:
        for s in u["shards"]:
            why = shard_problem(entry, m, s, vocab) or sample_problem(entry, m, s, vocab, budget)
            if why:
                out[u["id"]] = why
                break
    return out


def write_manifest(entry: Path, m: dict) -> None:
    from warmstart.checkpoint.write import atomic_write_text

    atomic_write_text(entry / MANIFEST, json.dumps(m, sort_keys=True, indent=1) + "\n")


# ------------------------------------------------------------------ what to tokenize


@dataclass
class Plan:
    keep: list[dict] = field(default_factory=list)  # units kept as they are
    pending: list[FileEntry] = field(default_factory=list)  # files to tokenize, in corpus order
    skipped: list[FileEntry] = field(default_factory=list)  # files sniffed as not text
    rebuilt: dict[str, str] = field(default_factory=dict)  # dropped unit -> why
    kept_files: dict[str, dict] = field(default_factory=dict)  # records of files kept (stat updated)


def file_record(f: FileEntry, unit: str | None, stats: dict | None = None) -> dict:
    rec = {"size": f.size, "mtime_ns": f.mtime_ns, "kind": f.kind, "codec": f.codec, "named": f.named,
           "unit": unit}
    if f.kind == SKIP:
        rec["reason"] = f.reason
    if stats:
        rec.update({k: stats[k] for k in ("documents", "bytes", "skipped", "sha256") if k in stats})
    return rec


def _same(f: FileEntry, rec: dict, content_sha256) -> bool:
    """The file is the one recorded: same size and mtime, or the same bytes (a touched file)."""
    if (f.size, f.mtime_ns, f.named) == (rec.get("size"), rec.get("mtime_ns"), rec.get("named")):
        return True
    return f.size == rec.get("size") and "sha256" in rec and content_sha256(f.path) == rec["sha256"]


def plan(m: dict | None, files: list[FileEntry], broken: dict[str, str], content_sha256) -> Plan:
    """What to keep and what to tokenize (see the module docstring); ``broken``: units found damaged."""
    p, records = Plan(rebuilt=dict(broken)), (m or {}).get("files", {})
    now = {f.key: f for f in files}
    changed = {k for k, rec in records.items() if k not in now or not _same(now[k], rec, content_sha256)}
    for u in (m or {}).get("units", []):
        gone = [k for k in u["files"] if k in changed]
        if gone and u["id"] not in p.rebuilt:
            p.rebuilt[u["id"]] = f"{gone[0]} changed or was removed"
        if u["id"] not in p.rebuilt:
            p.keep.append(u)
    kept = {k for u in p.keep for k in u["files"]}
    for f in files:
        rec = records.get(f.key)
        if f.key in kept:
            p.kept_files[f.key] = {**rec, "size": f.size, "mtime_ns": f.mtime_ns}
        elif rec is not None and f.key not in changed and rec.get("kind") == SKIP:
            f.kind, f.codec, f.reason = SKIP, rec.get("codec", ""), rec.get("reason", "")
            p.skipped.append(f)
        else:
            p.pending.append(f)
    return p


def group(files: list[FileEntry], unit_bytes: int) -> list[list[FileEntry]]:
    """Consecutive files into units of at least ``unit_bytes`` input bytes (the last one may be smaller).
    A unit is closed by its own files alone, so the units do not depend on the number of workers, and
    units that survive an interruption are formed again the same way."""
    units, cur, size = [], [], 0
    for f in files:
        cur.append(f)
        size += f.size
        if size >= unit_bytes:
            units.append(cur)
            cur, size = [], 0
    return units + ([cur] if cur else [])


def unit_id(files: list[FileEntry], settings: dict) -> str:
    blob = json.dumps([settings, [[f.key, f.size, f.mtime_ns, f.kind, f.codec, f.named] for f in files]],
                      sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8", errors="surrogateescape")).hexdigest()[:16]


__all__ = ["FORMAT", "MANIFEST", "Plan", "SHARDS", "TOKENIZER", "damaged", "damaged_units", "entry_key", "file_record",
           "group", "plan", "read_manifest", "shard_problem", "unit_id", "write_manifest"]
