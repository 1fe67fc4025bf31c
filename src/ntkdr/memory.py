"""The memory budget: one byte-size parser, one default, one meaning of ``None``, and the check of a request against the memory available.

Every function that takes ``max_memory`` (kernels, tiled kernel files, empirical NTKs, the
regression estimators, the command line) reads it through :func:`check_max_memory`, so the
same value means the same thing everywhere:

* a positive number of bytes, or a size string: ``"2GB"`` is ``2 * 10**9`` bytes and ``"2GiB"``
  is ``2**31`` (SI and IEC prefixes as in the International System of Units / IEC 80000-13),
  ``"512MB"``, ``"1.5GiB"``, ``"4096"`` or ``"4096B"``; anything else is a one-line
  ``ValueError``;
* ``None``: no cap on the results a caller asks for; working buffers (tiles, scratch, chunks)
  are sized from :data:`DEFAULT_MAX_MEMORY`.

The value is checked once where it enters (a public function, an estimator's ``fit``, the
command line) and then passed down as a number.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import re
import sys
from numbers import Real
from typing import Any

__all__ = [
    "DEFAULT_MAX_MEMORY",
    "parse_bytes",
    "check_max_memory",
    "working_budget",
    "format_bytes",
    "available_memory",
    "check_memory",
    "empty_large",
    "BufferPool",
]

#: Working-set budget (bytes) for tiles, scratch buffers and chunks when ``max_memory`` is None.
DEFAULT_MAX_MEMORY = 256 * 2**20

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_SIZE = re.compile(
    r"^\s*([+-]?(?:inf(?:inity)?|nan|[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?))\s*([a-z]*)\s*$", re.I
)


def _rule(name: str) -> str:
    return (
        f"{name} must be a positive number of bytes; expected a size such as 512MB or 2GB "
        "(10^9 bytes) or 2GiB (2^31 bytes)"
    )


def parse_bytes(value: Any, name: str = "max_memory") -> float:
    """A size in bytes from a positive number or a string such as ``"2GB"`` / ``"1.5GiB"``.

    Decimal prefixes are powers of ten (``"2GB"`` = 2*10^9), binary ones powers of two
    (``"2GiB"`` = 2^31); a bare number is bytes.  Strings give whole bytes (an ``int``); a
    number is returned as given.  Anything else is a one-line ``ValueError`` naming ``name``.
    """
    if isinstance(value, str):
        m = _SIZE.match(value)
        unit = m.group(2).upper() if m else None
        if m is None or unit not in _UNITS:
            raise ValueError(f"{_rule(name)}, got {value!r}")
        num = float(m.group(1)) * _UNITS[unit]
        if not (num > 0 and math.isfinite(num) and num < 2.0**63):
            raise ValueError(f"{name} must be > 0 and finite, got {value!r}")
        return int(num)
    if not isinstance(value, Real) or isinstance(value, bool):
        raise ValueError(f"{_rule(name)}, got {value!r}")
    if not (float(value) > 0 and math.isfinite(float(value)) and float(value) < 2.0**63):
        raise ValueError(f"{name} must be > 0 and finite, got {value!r} ({_rule(name)})")
    return value  # type: ignore[return-value]


def check_max_memory(value: Any, name: str = "max_memory") -> float | None:
    """``None`` (no cap on results; buffers from :data:`DEFAULT_MAX_MEMORY`) or bytes, parsed once."""
    return None if value is None else parse_bytes(value, name)


def working_budget(max_memory: float | None) -> float:
    """Bytes for working buffers: ``max_memory`` itself, or :data:`DEFAULT_MAX_MEMORY` for None."""
    return DEFAULT_MAX_MEMORY if max_memory is None else max_memory


def format_bytes(nbytes: float) -> str:
    """``'3.2e+12 bytes (2.9 TiB)'`` -- the exact count and a binary-prefixed size."""
    size, unit = float(nbytes), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if size < 1024 or unit == "EiB":
            break
        size /= 1024
    return f"{float(nbytes):.3g} bytes ({size:.3g} {unit})"


def available_memory(device: Any = None) -> int:
    """Bytes that can still be allocated on ``device``: free CUDA memory, or the kernel's
    ``MemAvailable`` (Linux; physical memory elsewhere) for the CPU."""
    import torch  # here, not at the top: the command line parses sizes without torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:  # Linux
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # no way to tell: do not refuse
        return 2**63


def check_memory(nbytes: float, what: str, advice: str, device: Any = None) -> None:
    """Refuse, before allocating, a request that cannot fit: ``ValueError`` naming the bytes
    needed, the bytes available and what to change (``advice``)."""
    import torch

    avail = available_memory(device)
    if nbytes > avail:
        dev = (
            "the GPU"
            if device is not None and torch.device(device).type == "cuda"
            else "this machine"
        )
        raise ValueError(
            f"{what} needs {format_bytes(nbytes)}, but {format_bytes(avail)} are available on "
            f"{dev}; {advice}"
        )


# Transparent huge pages for large CPU results.  numpy asks for them itself (madvise on arrays
# of >= 4 MiB, Linux); PyTorch's CPU allocator does not unless THP_MEM_ALLOC_ENABLE is set when
# the process starts.  First-touch page faults then dominate filling a fresh result: measured
# on 2 cores, a fresh 4000 x 4000 float32 tensor filled in 24 ms with 4 KiB pages, 8 ms with
# huge pages, and the n = 4000 two-layer NTK ran 10-15% faster into such a result.
_HUGE_PAGE = 2 << 20
_HUGE_MIN_BYTES = 4 << 20
_MADV_HUGEPAGE = 14  # Linux <sys/mman.h>
_madvise: Any = None


def _advise_huge_pages(ptr: int, nbytes: int) -> bool:
    """``madvise(MADV_HUGEPAGE)`` on the 2 MiB-aligned part of ``[ptr, ptr + nbytes)``; whether
    the kernel accepted it (False off Linux or where THP is unavailable: only speed changes)."""
    global _madvise
    if not sys.platform.startswith("linux"):
        return False
    if _madvise is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).madvise
            fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
            _madvise = fn
        except (OSError, AttributeError):
            _madvise = False
    if not _madvise:
        return False
    start = -(-ptr // _HUGE_PAGE) * _HUGE_PAGE
    stop = (ptr + nbytes) // _HUGE_PAGE * _HUGE_PAGE
    return stop > start and _madvise(start, stop - start, _MADV_HUGEPAGE) == 0


def empty_large(shape: tuple[int, ...], dtype: Any, device: Any) -> Any:
    """``torch.empty(shape)`` for a large result, its pages requested as transparent huge pages
    on a Linux CPU (before anything touches them; see the comment above).  Contents undefined."""
    import torch

    t = torch.empty(shape, dtype=dtype, device=device)
    nbytes = t.numel() * t.element_size()
    if t.device.type == "cpu" and nbytes >= _HUGE_MIN_BYTES:
        _advise_huge_pages(t.data_ptr(), nbytes)
    return t


class BufferPool:
    """Named n x n numpy buffers kept across the configurations of a grid.

    A fresh multi-GB array is a fresh ``mmap``: every page is faulted in again, and on a VM
    whose host reclaims freed memory that cost 9-16 s for a 1.6 GB float32 copy at n = 20000
    (0.4 s into a buffer already touched), and more than the kernel itself for the kernel.
    ``get`` returns the buffer kept under ``name`` if it has that shape and dtype (contents
    undefined), else a new one; ``release`` drops it (to lower the peak before another
    allocation).
    """

    def __init__(self) -> None:
        self._buffers: dict[str, Any] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: Any) -> Any:
        import numpy as np

        buf = self._buffers.get(name)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != np.dtype(dtype):
            self._buffers.pop(name, None)  # free the old one before allocating its successor
            buf = np.empty(shape, dtype=dtype)  # numpy madvises huge pages itself (>= 4 MiB)
            self._buffers[name] = buf
        return buf

    def release(self, name: str) -> None:
        self._buffers.pop(name, None)
