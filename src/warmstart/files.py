"""What a path on disk is, asked before anything opens it.

Checkpoints, corpus files, tokenizers and configs are opened only when they are regular files: a FIFO
would block ``open`` forever and a device (``/dev/zero``) reads without end, so both are refused by name
(WS003) from ``stat`` alone. A path whose symbolic links lead in a circle is reported as a loop (WS004),
not as a missing file. ``inside`` says whether a name taken from inside a checkpoint (a shard of the
index, a run's ``latest``) stays inside it; ``read_small`` reads a small file (a Hugging Face cache ref)
through the same checks and a size bound; ``check_output`` asks the same of a path about to be written.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from warmstart.errors import NotRegularFileError, SymlinkLoopError, UnreadableError, UsageError

_SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def path_stat(path: str | os.PathLike, what: str = "path") -> os.stat_result | None:
    """``os.stat`` (links followed), or None when nothing is there; SymlinkLoopError for a loop."""
    try:
        return os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise SymlinkLoopError(f"the {what} is a symbolic link that leads in a circle (a symlink loop)",
                                   why="following it never reaches a file",
                                   fix="point the link at a real file or directory", path=path) from None
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise


def special_kind(st: os.stat_result) -> str | None:
    """'a FIFO (named pipe)', 'a character device', ... for a special file; None for a file or directory."""
    return next((name for test, name in _SPECIAL if test(st.st_mode)), None)


def refuse_special(path: str | os.PathLike, what: str = "path") -> os.stat_result | None:
    """The stat of ``path`` (None when missing) after refusing a loop (WS004) or a special file (WS003)."""
    st = path_stat(path, what)
    if st is not None and (kind := special_kind(st)) is not None:
        raise NotRegularFileError(
            f"the {what} is {kind}, not a regular file", why="warmstart reads only regular files: a FIFO blocks "
            "until someone writes to it and a device can deliver bytes without end",
            fix="copy the data into a regular file and pass that", path=path)
    return st


def is_regular(path: str | os.PathLike, what: str = "file") -> bool:
    """``path`` is a regular file (links followed); a loop or a special file is refused, never opened."""
    st = refuse_special(path, what)
    return st is not None and stat.S_ISREG(st.st_mode)


def read_small(path: str | os.PathLike, limit: int, *, what: str, error: type[UnreadableError]) -> bytes | None:
    """The bytes of a small regular file (a ref, a pointer), None when nothing is there. A loop (WS004) or a
    special file (WS003) is refused before it is opened; anything else that is not a regular file, or one of
    more than ``limit`` bytes, is ``error`` naming ``what``. The file is opened without blocking and asked
    again what it is, so that one swapped for a FIFO meanwhile is refused too, never waited on."""
    st = refuse_special(path, what)
    if st is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise error(f"the {what} cannot be opened ({err.strerror})", path=path) from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"the {what} is {special_kind(st) or 'a directory'}, not a regular file", path=path,
                        why="it should be a small file written by the tool that owns it")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise error(f"the {what} holds {st.st_size:,} bytes, more than the {limit} such a file ever holds",
                    why="it is not the small file it should be; nothing of it is used", path=path)
    return data


def check_output(path: str | os.PathLike, *, replace: bool = False, directory: bool = False,
                 flag: str | None = "--force") -> None:
    """Refuse an output path before any work, the way every command that writes one does: something already
    there (a file, a directory, a dangling link) unless ``replace`` (``flag`` asked for it), and never, even
    then, a FIFO or device (WS003), a symlink loop (WS004), a directory where a file goes (or, with
    ``directory``, a file where a directory goes), or a parent that is not a directory. ``flag`` None: the
    command never replaces an output."""
    what = "output"
    if os.path.lexists(path):
        st = path_stat(path, what)
        if st is not None and (kind := special_kind(st)) is not None:
            raise NotRegularFileError(f"the {what} is {kind}, not a regular file or directory",
                                      why="warmstart writes files, never into a FIFO or a device (a FIFO blocks "
                                      "until someone reads it, a device swallows what it is given)",
                                      fix="choose a new path with -o", path=path)
        if st is not None and stat.S_ISDIR(st.st_mode) != directory:
            raise UsageError(f"the {what} {path} is {'a directory' if not directory else 'a file'}",
                             fix=f"give a new {'directory' if directory else 'file'} path with -o", path=path)
        if not replace:
            raise UsageError(f"the {what} {path} already exists", why="warmstart never replaces a file unless asked",
                             fix="choose another path with -o" + (f", or pass {flag} to replace it" if flag else ""),
                             path=path)
    for parent in Path(path).absolute().parents:
        st = path_stat(parent, "output's parent directory")
        if st is None:
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise UsageError(f"the {what} {path} cannot be created: {parent} is not a directory",
                             fix="choose a path inside a directory with -o", path=path)
        return


def inside(root: str | os.PathLike, name: str) -> bool:
    """Whether ``name`` (as written inside a checkpoint) names a path under ``root``: relative, and no
    ``..`` leads above it."""
    if not name or os.path.isabs(name) or "\\" in name or "\0" in name:
        return False
    depth = 0
    for part in Path(name).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return False
    return depth > 0


__all__ = ["check_output", "inside", "is_regular", "path_stat", "read_small", "refuse_special", "special_kind"]
