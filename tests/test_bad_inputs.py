"""The CLI bad-input table of the README: every bad input to ``ntkdr run | certify |
train | kernel`` exits with code 2 and prints exactly one line on stderr, starting with
"ntkdr", that names the problem -- and no traceback.

Each case runs ``ntkdr.cli.main`` in-process on tiny data (``--dataset digits`` or small files in
``tmp_path``); almost all fail before any work.  The README's "Bad input" table lists the
messages these cases produce.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ntkdr.cli import main

# Small-but-valid settings, so a case that slips past validation still finishes quickly.
TINY_TRAIN = ["--width", "8", "--steps", "1", "--quiet"]
TINY_DATA = ["--dataset", "digits", "--n-train", "30", "--n-test", "10"]


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, fragment):
    assert code == 2, (code, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ntkdr"), lines[0]
    assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Bad data files, each a few hundred bytes."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 10))
    y = np.where(rng.normal(size=40) > 0, 1, 0)
    f: dict[str, Path] = {}

    def npz(name, **arrays):
        p = tmp_path / name
        np.savez(p, **arrays)
        return p

    good = npz("good.npz", X=X, y=y)
    f["truncated"] = tmp_path / "truncated.npz"
    f["truncated"].write_bytes(good.read_bytes()[:200])
    np.save(tmp_path / "full.npy", np.c_[X, y])
    f["truncated_npy"] = tmp_path / "truncated.npy"
    f["truncated_npy"].write_bytes((tmp_path / "full.npy").read_bytes()[:300])
    f["png"] = tmp_path / "image.npz"  # a PNG renamed .npz
    f["png"].write_bytes(
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(rng.integers(0, 256, 200, dtype=np.uint8))
    )
    f["random_npy"] = tmp_path / "random.npy"
    f["random_npy"].write_bytes(bytes(rng.integers(0, 256, 300, dtype=np.uint8)))
    f["zero_bytes"] = tmp_path / "zero.npz"
    f["zero_bytes"].write_bytes(b"")
    f["directory"] = tmp_path / "folder.npz"  # a path that exists but is not a file
    f["directory"].mkdir()
    Xn = X.copy()
    Xn[3, 2] = np.nan
    f["nan"] = npz("nan.npz", X=Xn, y=y)
    Xi = X.copy()
    Xi[5, 1] = -np.inf
    f["inf"] = npz("inf.npz", X=Xi, y=y)
    f["empty"] = npz("empty.npz", X=np.zeros((0, 10)), y=np.zeros(0))
    f["one_class"] = npz("oneclass.npz", X=X, y=np.ones(40, dtype=int))
    f["mismatch"] = npz("mismatch.npz", X=X, y=y[:-1])
    f["no_y"] = npz("noy.npz", X=X)
    f["x_1d"] = npz("x1d.npz", X=np.ones(5), y=np.ones(5))
    f["object"] = npz("object.npz", X=np.array([[object()]] * 3), y=np.ones(3))
    f["zero_row"] = npz("zerorow.npz", X=np.r_[np.zeros((1, 10)), X[1:]], y=y)
    f["csv"] = tmp_path / "bad.csv"
    f["csv"].write_text("a,b,label\n1,2,0\n3,x,1\n")
    f["csv_ragged"] = tmp_path / "ragged.csv"
    f["csv_ragged"].write_text("1,2,0\n3,1\n")
    f["csv_header_only"] = tmp_path / "header.csv"
    f["csv_header_only"].write_text("a,b,label\n")
    f["unknown_format"] = tmp_path / "data.bin"
    f["unknown_format"].write_bytes(b"abc")
    f["regular_file"] = tmp_path / "afile"  # output paths below it cannot be created
    f["regular_file"].write_text("x")
    f["missing"] = tmp_path / "nope.npz"
    f["out"] = tmp_path / "out"
    return f


# (case id, command line built from the files fixture, fragment the one line must contain)
CASES = [
    # --- files ---------------------------------------------------------------------------
    ("missing file", lambda f: ["run", "--data", f["missing"]], "nope.npz: no such file"),
    (
        "unreadable path: a directory",
        lambda f: ["certify", "--data", f["directory"]],
        "is a directory",
    ),
    ("truncated npz", lambda f: ["run", "--data", f["truncated"]], "truncated or corrupt"),
    (
        "truncated npy",
        lambda f: ["certify", "--data", f["truncated_npy"]],
        "not a valid .npy array file",
    ),
    (
        "PNG renamed .npz",
        lambda f: ["train", "--data", f["png"], "--out", f["out"], *TINY_TRAIN],
        "not a .npz archive",
    ),
    (
        "random bytes .npy",
        lambda f: ["kernel", "--data", f["random_npy"], "--out", f["out"] / "k.npy"],
        "not a .npy array file",
    ),
    ("empty file", lambda f: ["run", "--data", f["zero_bytes"]], "file is empty"),
    (
        "unknown file format",
        lambda f: ["run", "--data", f["unknown_format"]],
        "unrecognised data file format",
    ),
    ("pickled objects", lambda f: ["run", "--data", f["object"]], "Python objects"),
    (
        "NaN in X",
        lambda f: ["certify", "--data", f["nan"]],
        "contains NaN or Inf (first at row 3, column 2)",
    ),
    (
        "Inf in X",
        lambda f: ["train", "--data", f["inf"], "--out", f["out"], *TINY_TRAIN],
        "contains NaN or Inf (first at row 5, column 1)",
    ),
    (
        "empty X (0 rows)",
        lambda f: ["kernel", "--data", f["empty"], "--out", f["out"] / "k.npy"],
        "X is empty",
    ),
    ("X not 2-D", lambda f: ["run", "--data", f["x_1d"]], "must be 2-D"),
    ("one class only (run)", lambda f: ["run", "--data", f["one_class"]], "single class"),
    (
        "one class only (train)",
        lambda f: ["train", "--data", f["one_class"], "--out", f["out"], *TINY_TRAIN],
        "single class",
    ),
    (
        "X/y length mismatch",
        lambda f: ["certify", "--data", f["mismatch"]],
        "different numbers of samples: 40 and 39",
    ),
    ("npz without y", lambda f: ["run", "--data", f["no_y"]], "has no labels 'y'"),
    (
        "non-numeric CSV",
        lambda f: ["kernel", "--data", f["csv"], "--out", f["out"] / "k.npy"],
        "non-numeric value 'x' in data row 2",
    ),
    (
        "ragged CSV",
        lambda f: ["run", "--data", f["csv_ragged"]],
        "data row 2 has 2 fields, expected 3",
    ),
    ("CSV header only", lambda f: ["run", "--data", f["csv_header_only"]], "no data rows"),
    ("zero-norm row", lambda f: ["certify", "--data", f["zero_row"]], "zero-norm rows"),
    # --- numbers ---------------------------------------------------------------------------
    ("width 0 (run)", lambda f: ["run", *TINY_DATA, "--width", "0"], "width must be >= 1, got 0"),
    (
        "width -5 (train)",
        lambda f: ["train", *TINY_DATA, "--width", "-5", "--out", f["out"]],
        "--width must be >= 1",
    ),
    (
        "width not a number",
        lambda f: ["run", "--width", "many"],
        "argument --width: invalid int value",
    ),
    (
        "steps -1 (run)",
        lambda f: ["run", *TINY_DATA, "--steps", "-1"],
        "steps must be >= 0, got -1",
    ),
    (
        "steps -1 (train)",
        lambda f: ["train", *TINY_DATA, "--steps", "-1", "--out", f["out"]],
        "--steps must be >= 0",
    ),
    ("k 0 (run)", lambda f: ["run", *TINY_DATA, "--ks", "0"], "k must be >= 1, got 0"),
    (
        "k 0 (train)",
        lambda f: [
            "train",
            *TINY_DATA,
            "--sketch",
            "gaussian",
            "--k",
            "0",
            "--out",
            f["out"],
            *TINY_TRAIN,
        ],
        "k must be >= 1, got 0",
    ),
    (
        "k -3 (kernel)",
        lambda f: [
            "kernel",
            *TINY_DATA,
            "--sketch",
            "srht",
            "--k",
            "-3",
            "--out",
            f["out"] / "k.npy",
        ],
        "k must be >= 1, got -3",
    ),
    (
        "k > d (certify)",
        lambda f: ["certify", *TINY_DATA, "--ks", "100"],
        "exceeds the data dimension d = 64",
    ),
    (
        "k > d (train)",
        lambda f: [
            "train",
            *TINY_DATA,
            "--sketch",
            "gaussian",
            "--k",
            "100",
            "--out",
            f["out"],
            *TINY_TRAIN,
        ],
        "k must be <= d = 64",
    ),
    (
        "k > d (kernel)",
        lambda f: [
            "kernel",
            *TINY_DATA,
            "--sketch",
            "srht",
            "--k",
            "65",
            "--out",
            f["out"] / "k.npy",
        ],
        "k must be <= d = 64",
    ),
    ("k list not integers", lambda f: ["run", "--ks", "a,b"], "comma-separated integers"),
    (
        "unknown sketch (run)",
        lambda f: ["run", *TINY_DATA, "--sketches", "fourier"],
        "unknown sketch kind 'fourier'",
    ),
    (
        "unknown sketch (certify)",
        lambda f: ["certify", *TINY_DATA, "--kinds", "gaussian,fft"],
        "unknown sketch kind 'fft'",
    ),
    (
        "unknown sketch (train)",
        lambda f: [
            "train",
            *TINY_DATA,
            "--sketch",
            "fourier",
            "--k",
            "8",
            "--out",
            f["out"],
            *TINY_TRAIN,
        ],
        "unknown sketch kind 'fourier'",
    ),
    (
        "unknown sketch (kernel)",
        lambda f: [
            "kernel",
            *TINY_DATA,
            "--sketch",
            "fourier",
            "--k",
            "8",
            "--out",
            f["out"] / "k.npy",
        ],
        "unknown sketch kind 'fourier'",
    ),
    (
        "--sketch without --k (train)",
        lambda f: ["train", *TINY_DATA, "--sketch", "srht", "--out", f["out"]],
        "--sketch srht needs --k",
    ),
    (
        "--sketch without --k (kernel)",
        lambda f: ["kernel", *TINY_DATA, "--sketch", "srht", "--out", f["out"] / "k.npy"],
        "--sketch srht needs --k",
    ),
    (
        "--k without --sketch",
        lambda f: ["train", *TINY_DATA, "--k", "8", "--out", f["out"], *TINY_TRAIN],
        "--k given without --sketch",
    ),
    (
        "tile 0",
        lambda f: ["kernel", *TINY_DATA, "--tile", "0", "--out", f["out"] / "k.npy"],
        "--tile must be >= 1, got 0",
    ),
    (
        "tile -1",
        lambda f: ["kernel", *TINY_DATA, "--tile", "-1", "--out", f["out"] / "k.npy"],
        "--tile must be >= 1",
    ),
    (
        "depth 0",
        lambda f: ["kernel", *TINY_DATA, "--depth", "0", "--out", f["out"] / "k.npy"],
        "--depth must be >= 1",
    ),
    (
        "max-memory not a size",
        lambda f: ["kernel", *TINY_DATA, "--max-memory", "lots", "--out", f["out"] / "k.npy"],
        "expected a size such as 512MB or 2GB",
    ),
    (
        "max-memory 0",
        lambda f: ["kernel", *TINY_DATA, "--max-memory", "0", "--out", f["out"] / "k.npy"],
        "size must be > 0",
    ),
    (
        "kernel --out not .npy",
        lambda f: ["kernel", *TINY_DATA, "--out", f["out"] / "k.txt"],
        "--out must be a .npy file",
    ),
    (
        "bad --lr",
        lambda f: ["train", *TINY_DATA, "--lr", "fast", "--out", f["out"]],
        "--lr must be a positive number, 'auto' or 'theory', got 'fast'",
    ),
    (
        "negative --lr",
        lambda f: ["train", *TINY_DATA, "--lr", "-0.1", "--out", f["out"]],
        "--lr must be a positive",
    ),
    (
        "NaN --lr",
        lambda f: ["train", *TINY_DATA, "--lr", "nan", "--out", f["out"]],
        "--lr must be a positive",
    ),
    (
        "--resume without checkpoint",
        lambda f: ["train", *TINY_DATA, "--resume", "--out", f["out"], *TINY_TRAIN],
        "--resume given but",
    ),
    (
        "--checkpoint-every 0",
        lambda f: ["train", *TINY_DATA, "--checkpoint-every", "0", "--out", f["out"]],
        "--checkpoint-every must be >= 1",
    ),
    (
        "--batch-size 0",
        lambda f: [
            "train",
            *TINY_DATA,
            "--optimizer",
            "sgd",
            "--batch-size",
            "0",
            "--out",
            f["out"],
            *TINY_TRAIN,
        ],
        "batch_size must be >= 1",
    ),
    ("--seeds 0", lambda f: ["certify", *TINY_DATA, "--seeds", "0"], "seeds must be >= 1"),
    ("--eps 0", lambda f: ["certify", *TINY_DATA, "--eps", "0"], "tolerance must be > 0"),
    (
        "--eps nan",
        lambda f: ["certify", *TINY_DATA, "--eps", "nan"],
        "tolerance must be a finite number",
    ),
    ("--seed -1", lambda f: ["run", *TINY_DATA, "--seed", "-1"], "seed must be >= 0"),
    (
        "--n-train 0",
        lambda f: ["run", "--dataset", "digits", "--n-train", "0"],
        "n_train must be >= 1",
    ),
    (
        "--n-train too large",
        lambda f: ["certify", "--dataset", "digits", "--n-train", "100000", "--ks", "8"],
        "leaves no test rows",
    ),
    # --- names -----------------------------------------------------------------------------
    (
        "unknown dataset (certify)",
        lambda f: ["certify", "--dataset", "imagenet"],
        "unknown dataset 'imagenet'",
    ),
    (
        "unknown dataset (kernel)",
        lambda f: ["kernel", "--dataset", "imagenet", "--out", f["out"] / "k.npy"],
        "unknown dataset 'imagenet'",
    ),
    (
        "--classes one label",
        lambda f: ["train", *TINY_DATA, "--classes", "3", "--out", f["out"]],
        "expected two integer labels 'A,B', got '3'",
    ),
    (
        "--classes equal",
        lambda f: ["run", *TINY_DATA, "--classes", "3,3"],
        "the two classes must differ",
    ),
    (
        "--classes absent label",
        lambda f: ["certify", *TINY_DATA, "--classes", "3,42"],
        "class 42 has no samples",
    ),
    (
        "--data and --dataset",
        lambda f: ["run", "--data", f["nan"], "--dataset", "digits"],
        "not allowed with argument",
    ),
    (
        "unknown option",
        lambda f: ["kernel", "--frobnicate", "--out", f["out"] / "k.npy"],
        "unrecognized arguments",
    ),
    (
        "--dtype float16",
        lambda f: ["train", "--dtype", "float16", "--out", f["out"]],
        "invalid choice",
    ),
    (
        "--device cuda without CUDA",
        lambda f: ["run", *TINY_DATA, "--device", "cuda"],
        "CUDA is not available",
    ),
    (
        "--device bogus",
        lambda f: ["train", *TINY_DATA, "--device", "tpu9", "--out", f["out"]],
        "device must be 'cpu' or 'cuda[:i]'",
    ),
    # --- outputs ---------------------------------------------------------------------------
    (
        "output dir under a file (run)",
        lambda f: ["run", "--quick", *TINY_DATA, "--output", f["regular_file"] / "sub"],
        "cannot create output directory",
    ),
    (
        "output dir under a file (train)",
        lambda f: ["train", *TINY_DATA, "--out", f["regular_file"] / "sub", *TINY_TRAIN],
        "cannot create output directory",
    ),
    (
        "output dir under a file (kernel)",
        lambda f: ["kernel", *TINY_DATA, "--out", f["regular_file"] / "k.npy"],
        "cannot create output directory",
    ),
]


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line(case, files, capsys):
    if case == "--device cuda without CUDA":
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
    build, fragment = {c[0]: (c[1], c[2]) for c in CASES}[case]
    code, _, err = run_cli(build(files), capsys)
    assert_one_line_error(code, err, fragment)
    assert not files["out"].exists() or not any(files["out"].iterdir()), (
        "bad input must not leave outputs behind"
    )


def test_chmod_000_file_is_reported(tmp_path, capsys):
    """An unreadable file (chmod 000); root reads it anyway, so the check only runs as a user."""
    if os.geteuid() == 0:
        pytest.skip(
            "running as root: chmod 000 does not stop reading (the directory case covers it)"
        )
    p = tmp_path / "locked.npz"
    np.savez(p, X=np.ones((4, 2)), y=np.array([0, 1, 0, 1]))
    p.chmod(0)
    try:
        code, _, err = run_cli(["run", "--data", p], capsys)
    finally:
        p.chmod(0o600)
    assert_one_line_error(code, err, "permission denied")


@pytest.mark.parametrize("depth", [[], ["--depth", "2"]])
def test_kernel_budget_smaller_than_one_tile(files, capsys, depth):
    """A budget that cannot hold even one row tile is refused with the sizes, before any work."""
    out = files["out"] / "k.npy"
    code, _, err = run_cli(
        ["kernel", *TINY_DATA, *depth, "--max-memory", "1KiB", "--out", out], capsys
    )
    line = assert_one_line_error(code, err, "too small")
    assert "1024 bytes" in line and not out.exists()


@pytest.mark.parametrize("depth", [None, 2])
def test_kernel_larger_than_budget_streams_to_disk(tmp_path, capsys, depth):
    """digits: 1797 rows -> a 25 MB float64 kernel, computed under a 4 MB working-set budget."""
    from ntkdr.data import load_dataset, normalize_rows
    from ntkdr.kernels import fc_relu_kernels, two_layer_ntk

    out = tmp_path / "k.npy"
    extra = [] if depth is None else ["--depth", str(depth)]
    code, _, err = run_cli(
        ["kernel", "--dataset", "digits", *extra, "--max-memory", "4MB", "--out", out, "--quiet"],
        capsys,
    )
    assert code == 0, err
    ds = load_dataset("digits")
    X = normalize_rows(np.concatenate([ds.X_train, ds.X_test]))
    ref = two_layer_ntk(X) if depth is None else fc_relu_kernels(X, depth=depth)[0]
    K = np.load(out)
    assert K.nbytes > 4 * 2**20
    np.testing.assert_allclose(K, ref, rtol=1e-7, atol=1e-9)


def test_certify_output_under_a_file_fails_fast(files, capsys, monkeypatch):
    import ntkdr.experiment

    def no_work(cfg):
        raise ValueError("work started before the --output path was checked")

    monkeypatch.setattr(ntkdr.experiment, "run_experiment", no_work)
    code, _, err = run_cli(
        [
            "certify",
            *TINY_DATA,
            "--ks",
            "8",
            "--seeds",
            "1",
            "--kinds",
            "gaussian",
            "--output",
            files["regular_file"] / "e.json",
        ],
        capsys,
    )
    line = assert_one_line_error(code, err, "cannot")
    assert "afile" in line and ".e.json." not in line


def test_zero_norm_row_message_points_at_the_file_row(files, capsys):
    code, _, err = run_cli(["certify", "--data", files["zero_row"]], capsys)
    line = assert_one_line_error(code, err, "zero-norm")
    assert "zerorow.npz" in line and "[0]" in line


def test_no_command(capsys):
    code, _, err = run_cli([], capsys)
    assert_one_line_error(code, err, "command")
