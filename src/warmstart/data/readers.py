"""Reading corpus files as streams of document pieces, in bounded memory, whatever their format.

``sniff`` says what a file holds (see ``sources.py``); ``read_pieces`` yields its documents as
``Piece``s, each at most ``PART_CHARS`` characters: a long document comes in several pieces, only
the last followed by EOS in the token stream. Records are counted from 0 in the file (a line of
JSON Lines, an item of a JSON array, a row of Parquet or Arrow, a 64 KiB part of a named text file;
a text file in a directory is one record); ``start`` skips the first records cheaply (a resume).

Documents and their keys: a text file in a directory is one document keyed by the file's key; a text
file named as ``--data`` itself is cut into documents of at most 64 KiB at a line end
(``KEY#part-N``); records are ``KEY#line-N`` (JSON Lines, N counting every line), ``KEY#item-N``
(JSON arrays), ``KEY#row-N`` (Parquet, Arrow). Empty and null texts are skipped and counted.

Bad input (docs/errors.md): a line that is not JSON, a record that is not an object or whose text
is not a string (WS211), a record over ``MAX_RECORD`` bytes (WS214), a truncated or corrupt
compressed stream (WS212), a Parquet or Arrow file that cannot be read (WS213). Each stops the
file's reading, unless ``skip_bad`` counts and skips the record (a damaged file cannot be skipped
record by record: it stops). A missing text field in a file's first record is a usage error naming
the fields there are (a file inside a directory is then skipped and counted instead).
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import hashlib
import io
import json
import lzma
import os
import zlib
from dataclasses import dataclass
from typing import Callable, Iterator

import zstandard

from warmstart.data.sources import CODECS, SKIP, SNIFF, TEXT, FileEntry, SourceStats
from warmstart.errors import (
    BadInputError, DamagedStreamError, DamagedTableError, RecordTooLargeError, SourceChangedError, UsageError,
)

PART_CHARS = 1 << 20  # characters of one piece of a long document
NAMED_PART = 64 * 1024  # characters of a document of a text file named as --data
MAX_RECORD = 64 << 20  # bytes of one record (a JSON Lines line, a JSON array item)
BLOCK = 1 << 20  # bytes read at a time
FIRST = 64 * 1024  # bytes of a file's head sniffed at first


@dataclass
class Piece:
    record: int  # the record's index in its file
    key: str  # the document's key (hashed for the split)
    text: str
    last: bool  # the document's last piece: EOS follows it
    nbytes: int = -1  # UTF-8 bytes of ``text`` (counted when -1)

    def __post_init__(self) -> None:
        if self.nbytes < 0:
            self.nbytes = len(self.text.encode("utf-8"))


@dataclass
class Abort:
    """The document being read is dropped (its pieces so far are taken back) for ``reason``."""

    reason: str


@dataclass
class ReadOptions:
    text_field: str = "text"
    skip_bad: bool = False
    budget: Callable[[], int | None] = lambda: None  # bytes of text left to read (None: no limit)


# ------------------------------------------------------------------ raw and decompressed bytes


class CountingReader(io.RawIOBase):
    """A file's bytes as read, counted (``done``: progress) and hashed (``sha256``: the file's content)."""

    def __init__(self, fh) -> None:
        self.fh, self.done, self.hash = fh, 0, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = self.fh.readinto(buf)
        if n:
            self.hash.update(memoryview(buf)[:n])
            self.done += n
        return n or 0

    def drain(self) -> str:
        """The sha256 of the whole file: the bytes not read yet are read now."""
        for chunk in iter(lambda: self.fh.read(BLOCK), b""):
            self.hash.update(chunk)
            self.done += len(chunk)
        return self.hash.hexdigest()

    def close(self) -> None:
        self.fh.close()
        super().close()


def _zstd_reader(raw):
    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True), BLOCK)


_OPENERS = {"gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"), "bz2": bz2.BZ2File, "xz": lzma.LZMAFile,
            "zst": _zstd_reader, "": lambda raw: io.BufferedReader(raw, BLOCK)}
_STREAM_ERRORS = (EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile, zstandard.ZstdError, OSError, ValueError)


def zstd_frames_end(fh, size: int) -> str | None:
    """Why a zstd file does not end at the end of a frame (truncated, garbage), or None: a walk over the
    frame and block headers alone, seeking over the block bodies (zstd's stream reader ends a truncated
    file silently)."""
    pos, frames = 0, 0
    while pos < size:
        fh.seek(pos)
        magic = int.from_bytes(fh.read(4), "little")
        if 0x184D2A50 <= magic <= 0x184D2A5F:  # a skippable frame
            pos += 8 + int.from_bytes(fh.read(4), "little")
            continue
        if magic != 0xFD2FB528:
            return f"bytes at offset {pos} are not a zstd frame"
        fhd = fh.read(1)[0] if pos + 5 <= size else 0
        single = (fhd >> 5) & 1
        pos += 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + ((1 if single else 0), 2, 4, 8)[fhd >> 6]
        while True:
            if pos + 3 > size:
                return f"the file ends inside frame {frames} (truncated at byte {size})"
            fh.seek(pos)
            head = int.from_bytes(fh.read(3), "little")
            pos += 3 + (1 if (head >> 1) & 3 == 1 else head >> 3)
            if head & 1:
                break
        pos += 4 if (fhd >> 2) & 1 else 0
        frames += 1
    return None if pos == size and frames else f"the file ends inside frame {frames} (truncated at byte {size})"


def open_stream(entry: FileEntry) -> tuple[CountingReader, io.BufferedIOBase]:
    """``(raw, stream)``: the file's raw bytes (counted, hashed) and its decompressed bytes. A zstd file is
    checked to end at a frame's end first (WS212)."""
    fh = open(entry.path, "rb", buffering=0)
    if entry.codec == "zst":
        why = zstd_frames_end(fh, entry.size)
        if why:
            fh.close()
            raise damaged_stream(entry, why)
        fh.seek(0)
    raw = CountingReader(fh)
    return raw, _OPENERS[entry.codec](raw)


def damaged_stream(entry: FileEntry, why: str) -> DamagedStreamError:
    return DamagedStreamError(
        f"the {entry.codec or 'compressed'} stream of {entry.key} is damaged: {why}",
        why="its remaining records cannot be read, and a guess at them would put other text in the cache",
        fix="download or copy the file again (check it with e.g. `gzip -t` / `zstd -t`); --skip-bad-records skips "
            "damaged files", path=entry.path)


# ------------------------------------------------------------------ what a file holds


def _classify(head: bytes, more: bool) -> tuple[str, str]:
    """``(kind, reason)`` of decompressed bytes that begin with ``head`` (``more``: the file goes on)."""
    if head.startswith(b"PAR1"):
        return "parquet", ""
    if head.startswith(b"ARROW1") or head.startswith(b"\xff\xff\xff\xff"):
        return "arrow", ""
    if head.startswith(b"PK\x03\x04") or head[257:262] == b"ustar":
        return SKIP, "unsupported"
    if b"\x00" in head[:SNIFF]:
        return SKIP, "binary"
    body = head.removeprefix(codecs.BOM_UTF8).lstrip()
    if not body and not more:
        return SKIP, "empty"
    if body.startswith(b"[") and body[1:].lstrip().startswith(b"{"):
        return "json", ""  # records: each is checked as it is read
    if body.startswith(b"{"):
        line, nl, _ = body.partition(b"\n")
        if not nl and more:
            return "jsonl", ""  # a first line longer than what was read: one long JSON record per line
        try:
            if isinstance(json.loads(line), dict):
                return "jsonl", ""
        except (ValueError, RecursionError):
            pass
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(head, final=not more)
    except UnicodeDecodeError:
        return SKIP, "undecodable"
    return TEXT, ""


def sniff(entry: FileEntry, skip_bad: bool = False) -> None:
    """Set ``entry.kind``, ``entry.codec`` (and ``entry.reason`` for a skipped file) from its first bytes."""
    with open(entry.path, "rb") as fh:
        magic = fh.read(8)
    entry.codec = next((c for m, c in CODECS.items() if magic.startswith(m)), "")
    try:
        raw, stream = open_stream(entry)
        with stream:
            head = stream.read(FIRST)
            if head.lstrip()[:1] == b"{" and b"\n" not in head and len(head) == FIRST:
                head += stream.readline(FIRST_LINE_MORE)
            more = bool(stream.read(1))
    except _STREAM_ERRORS as err:
        if not entry.codec:
            raise
        if not skip_bad:
            raise damaged_stream(entry, str(err)) from None
        entry.kind, entry.reason = SKIP, "damaged"
        return
    except DamagedStreamError:
        if not skip_bad:
            raise
        entry.kind, entry.reason = SKIP, "damaged"
        return
    entry.kind, entry.reason = _classify(head, more)
    if entry.codec and entry.kind in ("parquet", "arrow"):
        entry.kind, entry.reason = SKIP, "unsupported"


FIRST_LINE_MORE = 1 << 20


# ------------------------------------------------------------------ text


def _cut(buf: str, limit: int) -> int:
    """Where to end a piece of ``buf`` (longer than ``limit``): after its last line end within ``limit``,
    else at ``limit``."""
    nl = buf.rfind("\n", 0, limit)
    return nl + 1 if nl > 0 else limit


def _text_chunks(stream, limit: int | None) -> Iterator[str]:
    """The file's text in blocks (strict UTF-8), at most ``limit`` bytes of it (a partial character at a
    limit is dropped)."""
    dec = codecs.getincrementaldecoder("utf-8")("strict")
    read = 0
    while True:
        want = BLOCK if limit is None else min(BLOCK, limit - read)
        block = stream.read(want) if want > 0 else b""
        read += len(block)
        try:
            text = dec.decode(block, final=not block and (limit is None or read < limit))
        except UnicodeDecodeError as err:
            raise _Undecodable(read - len(block) + max(0, err.start)) from None
        if text:
            yield text
        if not block:
            return


class _Undecodable(Exception):
    def __init__(self, offset: int) -> None:
        self.offset = offset


def _text_named(entry: FileEntry, chunks: Iterator[str], start: int) -> Iterator[Piece]:
    """A named text file as documents of at most ``NAMED_PART`` characters, cut at line ends."""
    buf, part = "", 0
    for chunk in chunks:
        buf += chunk
        while len(buf) > NAMED_PART:
            end = _cut(buf, NAMED_PART)
            if part >= start:
                yield Piece(part, f"{entry.key}#part-{part}", buf[:end], True)
            buf, part = buf[end:], part + 1
    if buf:
        yield Piece(part, entry.key if part == 0 else f"{entry.key}#part-{part}", buf, True)


def _text_doc(entry: FileEntry, chunks: Iterator[str]) -> Iterator[Piece]:
    """A text file of a directory as one document in pieces (held back until it shows a non-space)."""
    buf, started = "", False
    for chunk in chunks:
        buf += chunk
        started = started or not buf.isspace()
        while started and len(buf) > PART_CHARS:
            end = _cut(buf, PART_CHARS)
            yield Piece(0, entry.key, buf[:end], False)
            buf = buf[end:]
    if started or (buf and not buf.isspace()):
        yield Piece(0, entry.key, buf, True)


def _text_pieces(entry: FileEntry, stream, opts: ReadOptions, stats: SourceStats, start: int):
    chunks = _text_chunks(stream, opts.budget())
    pieces = _text_named(entry, chunks, start) if entry.named else _text_doc(entry, chunks)
    yielded = False
    try:
        for p in pieces:
            yielded = True
            yield p
    except _Undecodable as err:
        if entry.named and yielded and not opts.skip_bad:
            raise BadInputError(f"{entry.key} is not UTF-8 text at byte {err.offset}",
                                why="a guess at the characters would put other text in the cache",
                                fix="convert the file to UTF-8 (e.g. iconv), or pass --skip-bad-records to "
                                    "keep the text before that byte", path=entry.path) from None
        if entry.named:
            stats.skip("undecodable", entry.key)
        else:
            yield Abort("undecodable")
        return
    if not yielded:
        stats.skip("empty", entry.key)


# ------------------------------------------------------------------ records


class _NoField(Exception):
    """The file's first record has no text field: a file inside a directory is then skipped."""

    def __init__(self, fields: list[str]) -> None:
        self.fields = fields


def no_field_error(entry: FileEntry, field: str, fields: list[str], what: str = "record") -> UsageError:
    return UsageError(f"{what} {entry.key} has no field '{field}' (fields: {', '.join(map(str, fields[:12]))})",
                      fix="pass --text-field NAME naming the field that holds the text", path=entry.path)


def bad_record(entry: FileEntry, where: str, found: str) -> BadInputError:
    return BadInputError(f"{entry.key} {where} {found}",
                         why="a record warmstart cannot read as text would be lost without a word",
                         fix="repair or remove the record, or pass --skip-bad-records to count and skip such "
                             "records", path=entry.path)


def _split_text(entry: FileEntry, n: int, key: str, text: str) -> Iterator[Piece]:
    for i in range(0, len(text), PART_CHARS):
        yield Piece(n, key, text[i : i + PART_CHARS], i + PART_CHARS >= len(text))


def _encodable(text: str) -> bool:
    """JSON may hold lone surrogates (``"\\ud800"``), which are no UTF-8 text the tokenizer can take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _record_pieces(entry: FileEntry, rec, n: int, where: str, key: str, opts: ReadOptions, stats: SourceStats,
                   first: bool) -> Iterator[Piece]:
    """The pieces of record ``n`` (none for an empty one, or a bad one under ``skip_bad``)."""
    field = opts.text_field
    if isinstance(rec, dict) and field not in rec and first:
        raise _NoField(list(rec))
    found = ("is not a JSON object" if not isinstance(rec, dict) else f"has no field '{field}'" if field not in rec
             else None)
    text = rec.get(field) if found is None else None
    if found is None and text is not None and not isinstance(text, str):
        found = f"has a '{field}' that is {type(text).__name__}, not a string"
    elif found is None and isinstance(text, str) and not text.isascii() and not _encodable(text):
        found = f"has a '{field}' holding a lone surrogate (\\uD800-\\uDFFF), which is not text"
    if found is not None:
        if not opts.skip_bad:
            raise bad_record(entry, where, found)
        stats.skip("bad record", key)
        return
    if text is None or not text.strip():
        stats.skip("empty", key)
        return
    yield from _split_text(entry, n, key, text)


def _long_line(stream, entry: FileEntry, n: int, opts: ReadOptions, stats: SourceStats) -> None:
    if not opts.skip_bad:
        raise RecordTooLargeError(
            f"line {n} of {entry.key} is longer than {MAX_RECORD >> 20} MiB",
            why="one record is read whole into memory; a line this long is most likely not one JSON record",
            fix="split the record, or pass --skip-bad-records to count and skip such lines", path=entry.path)
    stats.skip("too large", f"{entry.key}#line-{n}")
    while (rest := stream.readline(BLOCK)) and not rest.endswith(b"\n"):
        pass


def _jsonl_pieces(entry: FileEntry, stream, opts: ReadOptions, stats: SourceStats, start: int):
    n, first = -1, start == 0
    while line := stream.readline(MAX_RECORD + 1):
        n += 1
        if len(line) > MAX_RECORD and not line.endswith(b"\n"):
            _long_line(stream, entry, n, opts, stats) if n >= start else None
            continue
        if n < start or not line.strip():
            continue
        key = f"{entry.key}#line-{n}"
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError) as err:
            if not opts.skip_bad:
                raise bad_record(entry, f"line {n}", f"is not JSON ({str(err)[:120]})") from None
            stats.skip("bad record", key)
            continue
        yield from _record_pieces(entry, rec, n, f"line {n}", key, opts, stats, first)
        first = False


class _ArrayItems:
    """The items of a JSON array read from a text stream, one at a time (never the whole array)."""

    def __init__(self, chunks: Iterator[str], entry: FileEntry) -> None:
        self.chunks, self.entry, self.buf, self.pos, self.eof = chunks, entry, "", 0, False
        self.decoder = json.JSONDecoder()

    def _fill(self) -> bool:
        chunk = next(self.chunks, None)
        if chunk is None:
            self.eof = True
            return False
        self.buf, self.pos = self.buf[self.pos :] + chunk, 0
        return True

    def _peek(self) -> str:
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf) or not self._fill():
                return self.buf[self.pos : self.pos + 1]

    def _expect(self, chars: str, n: int) -> str:
        c = self._peek()
        if c not in chars or not c:
            raise bad_record(self.entry, f"item {n}", f"is not followed by {' or '.join(chars)} (JSON array syntax)")
        self.pos += 1
        return c

    def __iter__(self):
        self._expect("[", 0)
        n = 0
        while self._peek() != "]":
            if n:
                self._expect(",", n)
            yield self._item(n)
            n += 1

    def _item(self, n: int):
        self._peek()
        while True:
            try:
                obj, end = self.decoder.raw_decode(self.buf, self.pos)
                if end < len(self.buf) or self.eof:
                    self.pos = end
                    return obj
            except (ValueError, RecursionError) as err:
                if self.eof:
                    raise bad_record(self.entry, f"item {n}", f"is not JSON ({str(err)[:120]})") from None
            if len(self.buf) - self.pos > MAX_RECORD:
                raise RecordTooLargeError(f"item {n} of the JSON array {self.entry.key} is larger than "
                                          f"{MAX_RECORD >> 20} MiB", why="one record is read whole into memory",
                                          fix="split the record, or write the data as JSON Lines",
                                          path=self.entry.path)
            self._fill()


def _json_pieces(entry: FileEntry, stream, opts: ReadOptions, stats: SourceStats, start: int):
    try:
        for n, rec in enumerate(_ArrayItems(_text_chunks(stream, None), entry)):
            if n >= start:
                key = f"{entry.key}#item-{n}"
                yield from _record_pieces(entry, rec, n, f"item {n}", key, opts, stats, n == 0)
    except _Undecodable as err:
        raise bad_record(entry, f"at byte {err.offset}", "is not UTF-8") from None


# ------------------------------------------------------------------ tables (Parquet, Arrow)


def _table_error(entry: FileEntry, err: Exception) -> DamagedTableError:
    kind = "Parquet" if entry.kind == "parquet" else "Arrow"
    return DamagedTableError(f"the {kind} file {entry.key} cannot be read ({type(err).__name__}: {str(err)[:200]})",
                             why="its rows cannot be told apart from damage", fix="download or write the file "
                             "again; --skip-bad-records skips files that cannot be read", path=entry.path)


def _column(entry: FileEntry, schema, opts: ReadOptions) -> int:
    """The index of the text column (a string column); ``_NoField`` when there is none."""
    import pyarrow as pa

    names = list(schema.names)
    if opts.text_field not in names:
        raise _NoField(names)
    typ = schema.field(opts.text_field).type
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ) or getattr(pa.types, "is_string_view",
                                                                              lambda t: False)(typ)):
        raise bad_record(entry, f"column '{opts.text_field}'", f"holds {typ}, not text")
    return names.index(opts.text_field)


def _batches(entry: FileEntry, opts: ReadOptions, start: int):
    """``(first row, column, record batch)`` from row ``start`` on (whole row groups / batches skipped)."""
    import pyarrow as pa

    if entry.kind == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(entry.path)
        col = _column(entry, pf.schema_arrow, opts)
        row = 0
        for g in range(pf.num_row_groups):
            rows = pf.metadata.row_group(g).num_rows
            if row + rows > start:
                for batch in pf.iter_batches(batch_size=4096, row_groups=[g], columns=[opts.text_field]):
                    yield row, 0, batch
                    row += batch.num_rows
            else:
                row += rows
        return
    source = pa.memory_map(str(entry.path))
    reader = pa.ipc.open_file(source) if source.read(6) == b"ARROW1" else None
    source.seek(0)
    batches = (reader.get_batch(i) for i in range(reader.num_record_batches)) if reader else pa.ipc.open_stream(source)
    col = _column(entry, reader.schema if reader else batches.schema, opts)
    row = 0
    for batch in batches:
        if row + batch.num_rows > start:
            yield row, col, batch
        row += batch.num_rows


def _table_pieces(entry: FileEntry, opts: ReadOptions, stats: SourceStats, start: int):
    import pyarrow as pa

    try:
        for row, col, batch in _batches(entry, opts, start):
            for i, text in enumerate(batch.column(col).to_pylist()):
                n = row + i
                if n < start:
                    continue
                key = f"{entry.key}#row-{n}"
                if text is None or not text.strip():
                    stats.skip("empty", key)
                    continue
                yield from _split_text(entry, n, key, text)
    except (pa.ArrowException, OSError) as err:
        raise _table_error(entry, err) from None


# ------------------------------------------------------------------ a whole file


def _changed(entry: FileEntry, when: str) -> SourceChangedError | None:
    st = os.stat(entry.path)
    if (st.st_size, st.st_mtime_ns) == entry.stat_key:
        return None
    return SourceChangedError(
        f"{entry.key} changed {when} (size {entry.size} -> {st.st_size} bytes, modified again)",
        why="the tokens would come from neither version of the file", fix="run prepare again once nothing "
        "writes to the file (what is complete is kept; only this file's part is read again)", path=entry.path)


def read_pieces(entry: FileEntry, opts: ReadOptions, stats: SourceStats, start: int = 0,
                digest: dict | None = None) -> Iterator[Piece | Abort]:
    """The pieces of the file from record ``start`` on; ``digest["sha256"]`` is its content's hash after
    the last piece. The file must not change meanwhile (SourceChangedError, WS215). A damaged file
    (WS212, WS213) stops here, or under ``skip_bad`` ends with what was read before the damage."""
    if err := _changed(entry, "since it was listed"):
        raise err
    try:
        yield from _read(entry, opts, stats, start, digest)
    except (DamagedStreamError, DamagedTableError):
        if not opts.skip_bad:
            raise
        stats.skip("damaged", entry.key)


def _read(entry: FileEntry, opts: ReadOptions, stats: SourceStats, start: int, digest: dict | None):
    if entry.kind in ("parquet", "arrow"):
        try:
            yield from _table_pieces(entry, opts, stats, start)
        except _NoField as nf:
            _no_field(entry, opts, stats, nf)
        _finish(entry, digest, None)
        return
    raw, stream = open_stream(entry)
    with stream:
        try:
            reader = {"jsonl": _jsonl_pieces, "json": _json_pieces}.get(entry.kind, _text_pieces)
            yield from reader(entry, stream, opts, stats, start)
        except _NoField as nf:
            _no_field(entry, opts, stats, nf)
        except _STREAM_ERRORS as err:
            if isinstance(err, OSError) and not entry.codec:
                raise
            raise damaged_stream(entry, str(err) or type(err).__name__) from None
        _finish(entry, digest, raw)


def _no_field(entry: FileEntry, opts: ReadOptions, stats: SourceStats, nf: _NoField) -> None:
    if entry.named:
        raise no_field_error(entry, opts.text_field, nf.fields,
                             "Parquet/Arrow file" if entry.kind in ("parquet", "arrow") else "JSON record of")
    stats.skip("no text field", entry.key)


def _finish(entry: FileEntry, digest: dict | None, raw: CountingReader | None) -> None:
    if err := _changed(entry, "while it was read"):
        raise err
    if digest is not None:
        digest["sha256"] = raw.drain() if raw is not None else file_sha256(entry.path)


def file_sha256(path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


__all__ = ["Abort", "MAX_RECORD", "PART_CHARS", "Piece", "ReadOptions", "file_sha256", "open_stream", "read_pieces",
           "sniff"]
