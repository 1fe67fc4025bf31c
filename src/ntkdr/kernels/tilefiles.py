"""The files of a resumable tiled kernel run: where they live, the per-rank records of finished tiles, the lock and the resume-or-start-over decision.

See :mod:`ntkdr.kernels.tiles` for the layout on disk and the crash-safety argument.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ntkdr.io import write_text_atomic

try:  # advisory lock against two concurrent runs on one output (POSIX only)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

FORMAT = "ntkdr-kernel-tiles"
VERSION = 1


class ResumeWarning(UserWarning):
    """A partial result could not be resumed (inputs, kernel or tiling changed); starting over."""


@dataclass(frozen=True)
class _Paths:
    out: Path
    partial: Path
    lock: Path

    def record(self, rank: int, world_size: int) -> Path:
        name = (
            f"{self.out.name}.partial.json"
            if world_size == 1
            else f"{self.out.name}.partial.rank{rank}.json"
        )
        return self.out.with_name(name)

    def records(self, with_tmp: bool = False) -> list[Path]:
        """Every record file of this output (any rank, any earlier world size)."""
        pat = re.compile(
            re.escape(self.out.name)
            + r"\.partial(\.rank\d+)?\.json"
            + (r"(\.tmp)?" if with_tmp else "")
            + "$"
        )
        try:
            names = os.listdir(self.out.parent)
        except OSError:
            return []
        return sorted(self.out.parent / f for f in names if pat.match(f))


def partial_paths(out_path: str | os.PathLike) -> dict[str, Path]:
    """Where :func:`compute_kernel_to_file` keeps its work for ``out_path`` while it runs."""
    p = _paths(out_path)
    return {"partial": p.partial, "record": p.record(0, 1), "lock": p.lock}


def _paths(out_path: Any) -> _Paths:
    if not isinstance(out_path, (str, os.PathLike)):
        raise ValueError(f"out_path must be a path to a .npy file, got {type(out_path).__name__}")
    out = Path(out_path)
    if out.suffix != ".npy" or out.name == ".npy":
        raise ValueError(f"out_path must be a .npy file, got {str(out)!r}")
    out = out.absolute()
    if out.is_dir():
        raise ValueError(f"out_path {str(out)!r} is a directory")
    return _Paths(
        out, out.with_name(out.name + ".partial.npy"), out.with_name(out.name + ".partial.lock")
    )


def _bits_to_hex(done: np.ndarray) -> str:
    return np.packbits(done.astype(np.uint8)).tobytes().hex()


def _hex_to_bits(text: str, n_tiles: int) -> np.ndarray:
    raw = np.frombuffer(bytes.fromhex(text), dtype=np.uint8)
    bits = np.unpackbits(raw)
    if bits.size < n_tiles or bits[n_tiles:].any():
        raise ValueError("bitmap length does not match n_tiles")
    return bits[:n_tiles].astype(bool)


def _write_record(path: Path, obj: dict) -> None:
    # a fixed temporary name (one writer per record), so that leftovers are found by name
    write_text_atomic(path, json.dumps(obj, indent=1), fsync=True, tmp_name=path.name + ".tmp")


def _read_record(path: Path) -> dict:
    """Parse a record; raise ValueError saying what is wrong with it."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"record {path.name} is unreadable ({exc})") from None
    try:
        if rec.get("format") != FORMAT or rec.get("version") != VERSION:
            raise ValueError("unknown format or version")
        rec["tile_rows"] = int(rec["tile_rows"])
        rec["done_bits"] = _hex_to_bits(rec["done"], int(rec["n_tiles"]))
        rec["inputs"] = dict(rec["inputs"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"record {path.name} is malformed ({exc})") from None
    return rec


def _lock(paths: _Paths) -> int | None:
    if fcntl is None:
        return None
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ValueError(
            f"another process is computing {str(paths.out)!r} (lock {paths.lock.name} is held)"
        ) from None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


def _resume_problem(
    paths: _Paths, inputs: dict, tile_rows: int | None, fit_rows: int, shape, np_dtype
) -> str | None:
    """Why the existing partial result cannot be resumed (None: it can)."""
    records = paths.records()
    parsed = []
    for p in records:
        try:
            parsed.append(_read_record(p))
        except ValueError as exc:
            return str(exc)
    for rec in parsed:
        for key, now in inputs.items():
            if rec["inputs"].get(key) != now:
                then = rec["inputs"].get(key)
                if key in ("x_sha256", "z_sha256"):  # short hashes are enough to tell them apart
                    then, now = (None if v is None else str(v)[:12] for v in (then, now))
                label = {
                    "x_sha256": "the data in X (SHA-256)",
                    "z_sha256": "the data in Z (SHA-256)",
                }.get(key, key)
                return f"{label} differs from the interrupted run ({then!r} then, {now!r} now)"
    rows = {rec["tile_rows"] for rec in parsed}
    if len(rows) > 1:
        return f"records disagree on tile_rows ({sorted(rows)})"
    (old,) = rows
    if tile_rows is not None and tile_rows != old:
        return f"tile_rows differs from the interrupted run ({old} then, {tile_rows} now)"
    if tile_rows is None and old > fit_rows:
        return f"the interrupted run's tile_rows = {old} does not fit max_memory ({fit_rows} rows would)"
    if not paths.partial.exists():
        return f"{paths.partial.name} is missing"
    try:
        mm = np.lib.format.open_memmap(paths.partial, mode="r")
    except (OSError, ValueError) as exc:
        return f"{paths.partial.name} is unreadable ({exc})"
    ok = (
        mm.shape == tuple(shape)
        and mm.dtype == np_dtype
        and not mm.dtype.hasobject
        and mm.flags.c_contiguous
    )
    del mm
    if not ok:
        return f"{paths.partial.name} has the wrong shape or dtype"
    return None


def _create_partial(paths: _Paths, shape: tuple[int, int], np_dtype: np.dtype) -> None:
    nbytes = shape[0] * shape[1] * np_dtype.itemsize
    free = shutil.disk_usage(paths.out.parent).free
    if paths.partial.exists():
        free += paths.partial.stat().st_size
    if nbytes > free:
        raise ValueError(
            f"the {shape[0]} x {shape[1]} {np_dtype.name} kernel needs {nbytes / 2**30:.3g} GiB on disk "
            f"but only {free / 2**30:.3g} GiB is free in {str(paths.out.parent)!r}"
        )
    mm = np.lib.format.open_memmap(paths.partial, mode="w+", dtype=np_dtype, shape=shape)
    mm.flush()
    del mm
    # Reserve the blocks now: writing through a mapping into a sparse file on a full disk
    # kills the process with SIGBUS instead of raising.
    if hasattr(os, "posix_fallocate"):
        fd = os.open(paths.partial, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
        except OSError as exc:
            if exc.errno == 28:  # ENOSPC
                raise ValueError(
                    f"not enough disk space for {paths.partial}: {exc.strerror}"
                ) from None
            # EOPNOTSUPP / EINVAL: the file system cannot preallocate; the free-space check stands
        finally:
            os.close(fd)


def _setup(
    paths: _Paths, inputs: dict, tile_rows: int | None, fit_rows: int, shape, np_dtype
) -> None:
    """Rank 0: keep a resumable partial result, or remove the old work and create a fresh file."""
    problem = None
    if paths.records():
        problem = _resume_problem(paths, inputs, tile_rows, fit_rows, shape, np_dtype)
        if problem is None:
            return
        warnings.warn(
            f"not resuming {paths.partial}: {problem}; starting over", ResumeWarning, stacklevel=5
        )
    # Records go first: a crash between the two steps then leaves no record that could vouch
    # for tiles of the new file.
    for p in paths.records(with_tmp=True):
        p.unlink()
    _create_partial(paths, shape, np_dtype)


def _load_plan(paths: _Paths, default_rows: int, n: int) -> tuple[int, np.ndarray]:
    """(tile_rows, finished tiles) from the records rank 0 kept (union over all of them)."""
    recs = [_read_record(p) for p in paths.records()]
    t = recs[0]["tile_rows"] if recs else default_rows
    n_tiles = -(-n // t)
    done = np.zeros(n_tiles, dtype=bool)
    for rec in recs:
        if rec["tile_rows"] != t or rec["done_bits"].size != n_tiles:
            raise RuntimeError(
                f"record {rec.get('rank')} does not match the tiling (internal error)"
            )
        done |= rec["done_bits"]
    return t, done
