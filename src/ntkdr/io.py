"""Atomic file writes (temporary file beside the target, then ``os.replace``) and output directories.

The one copy used by the report, the training checkpoints, the benchmark JSON and the
out-of-core kernel files: a reader never sees a torn file, and a crash leaves at most a
temporary file (removed on any exception raised in Python).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_text_atomic", "make_output_dir", "fsync_dir"]


@contextmanager
def atomic_path(
    path: str | os.PathLike,
    suffix: str = "",
    *,
    fsync: bool = False,
    makedirs: bool = False,
    tmp_name: str | None = None,
) -> Iterator[str]:
    """Yield a temporary path beside ``path``; when the block succeeds, rename it onto ``path``.

    ``fsync``: flush the temporary's bytes to disk before the rename (crash safety, not only
    atomicity).  ``makedirs``: create the folder first.  ``tmp_name``: a fixed name for the
    temporary (for a file with a single writer whose leftovers are cleaned up by name);
    default a fresh ``.{name}.<random>{suffix}`` from :func:`tempfile.mkstemp`.
    """
    target = Path(path)
    if makedirs:
        target.parent.mkdir(parents=True, exist_ok=True)
    if tmp_name is None:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
        os.close(fd)
    else:
        tmp = str(target.with_name(tmp_name))
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):  # the temporary may already be gone
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str, **kwargs: object) -> None:
    """Write ``text`` to ``path`` atomically (keyword arguments as in :func:`atomic_path`)."""
    with atomic_path(path, **kwargs) as tmp:  # type: ignore[arg-type]
        Path(tmp).write_text(text)


def make_output_dir(outdir: str | os.PathLike) -> Path:
    """Create ``outdir`` (with parents) and check it is writable; a one-line ``ValueError`` if not."""
    out = Path(outdir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"cannot create output directory {str(out)!r}: {exc.strerror or exc}"
        ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"output directory {str(out)!r} is not writable")
    return out


def fsync_dir(d: str | os.PathLike) -> None:
    """Flush a directory entry (after a rename) where the file system allows it."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some file systems cannot fsync a directory
            os.fsync(fd)
    finally:
        os.close(fd)
