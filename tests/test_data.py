"""Tests for ntkdr.data: built-in / synthetic data sets, file loaders, preprocessing, errors."""

from __future__ import annotations

import gzip
import importlib.util
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ntkdr import data as D
from ntkdr.data import (
    DATASETS,
    Dataset,
    binary_task,
    center,
    dataset_from_file,
    load_dataset,
    load_file,
    load_idx,
    load_labels,
    load_xy,
    make_dataset,
    make_gaussian,
    make_lowrank,
    make_sphere,
    normalize_rows,
    one_hot,
    standardize,
    teacher_labels,
    train_test_split,
)

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ROOT / "src" / "ntkdr" / "_data" / "mnist_subset.npz"
SHARED = ROOT.parent / "shared" / "data" / "mnist10k.npz"


# ------------------------------------------------------------------ embedded MNIST subset
def test_embedded_subset_file_is_small_and_stratified():
    assert SUBSET.stat().st_size < 2_000_000
    with np.load(SUBSET, allow_pickle=False) as f:
        X, y = f["X"], f["y"]
    assert X.dtype == np.uint8 and X.shape == (8000, 784)
    assert np.array_equal(np.bincount(y), np.full(10, 800))
    assert np.all(np.diff(y.astype(int)) >= 0)  # grouped by class


@pytest.mark.skipif(not SHARED.exists(), reason="shared MNIST source not present")
def test_generator_script_reproduces_the_subset_exactly():
    spec = importlib.util.spec_from_file_location(
        "make_mnist_subset", ROOT / "scripts" / "make_mnist_subset.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    arrays = mod.build(SHARED)
    with np.load(SUBSET, allow_pickle=False) as f:
        assert set(f.files) == set(arrays)
        for k, v in arrays.items():
            assert f[k].dtype == v.dtype and np.array_equal(f[k], v), k
        # the indices really point at the source rows
    with np.load(SHARED, allow_pickle=False) as s:
        assert np.array_equal(s["X"][arrays["index"]], arrays["X"])


def test_mnist_default_is_the_main_job_task():
    ds = load_dataset("mnist")
    assert isinstance(ds, Dataset)
    assert (ds.n_train, ds.n_test, ds.d) == (1000, 500, 784)
    assert ds.task == "binary" and ds.classes == D.EVEN_ODD
    assert ds.X_train.dtype == np.float64 and ds.y_train.dtype == np.float64
    assert set(np.unique(ds.y_train)) == {-1.0, 1.0}
    np.testing.assert_allclose(np.linalg.norm(ds.X_train, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(ds.X_test, axis=1), 1.0, atol=1e-12)
    # stratified by digit: 100 of each digit in train, 50 in test -> balanced +-1
    assert np.sum(ds.y_train == 1) == 500 and np.sum(ds.y_test == 1) == 250
    assert "CC BY-SA" in ds.info["attribution"]
    assert ds.info["label_map"] == {"+1": D.EVEN_ODD[0], "-1": D.EVEN_ODD[1]}


def test_mnist_determinism_and_seed():
    a, b, c = (
        load_dataset("mnist", seed=3),
        load_dataset("mnist", seed=3),
        load_dataset("mnist", seed=4),
    )
    assert np.array_equal(a.X_train, b.X_train) and np.array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.X_train, c.X_train)
    # no train row appears in the test set
    tr = {r.tobytes() for r in a.X_train}
    assert not any(r.tobytes() in tr for r in a.X_test)


def test_mnist_pair_multiclass_and_options():
    ds = load_dataset("mnist", classes=(3, 5), n_train=600, n_test=200, dtype="float32")
    assert (
        ds.classes == (3, 5) and ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.float32
    )
    assert (ds.n_train, ds.n_test) == (600, 200)
    assert np.sum(ds.y_train == 1) == 300
    raw = load_dataset("mnist", normalize=False, n_train=50, n_test=10)
    assert raw.X_train.min() >= 0 and raw.X_train.max() <= 1 and raw.X_train.max() > 0.9
    mc = load_dataset("mnist", task="multiclass", n_train=200, n_test=100)
    assert mc.y_train.dtype == np.int64 and np.array_equal(np.bincount(mc.y_train), np.full(10, 20))
    sub = load_dataset("mnist", task="multiclass", classes=(7, 2))
    assert sub.classes == (7, 2) and set(np.unique(sub.y_test)) == {0, 1}


def test_builtin_sklearn_sets():
    dg = load_dataset("digits")
    assert (dg.n_train, dg.n_test, dg.d) == (1000, 500, 64)
    bc = load_dataset("breast_cancer")
    assert bc.d == 30 and bc.n_train + bc.n_test == 569 and bc.classes == (1, 0)
    assert bc.info["standardize"] is True
    np.testing.assert_allclose(np.linalg.norm(bc.X_train, axis=1), 1.0, atol=1e-12)


def test_sizes_adapt_and_errors():
    ds = load_dataset("digits", classes=(0, 1))  # 360 rows: defaults do not fit -> 75/25
    assert ds.n_train + ds.n_test == 360 and ds.n_test == 90
    with pytest.raises(ValueError, match="exceeds the 1600 samples"):
        load_dataset("mnist", classes=(3, 5), n_train=1500, n_test=200)
    with pytest.raises(ValueError, match="n_train must be >= 1"):
        load_dataset("mnist", n_train=0)


def test_unknown_dataset_name_lists_names():
    assert DATASETS == ("mnist", "digits", "breast_cancer", "sphere", "gaussian", "lowrank")
    with pytest.raises(ValueError, match="unknown dataset 'cifar'.*'mnist'.*'lowrank'"):
        load_dataset("cifar")
    with pytest.raises(ValueError, match="unknown option.*rank.*'sphere'"):
        load_dataset("sphere", rank=3)
    with pytest.raises(ValueError, match="unknown task"):
        load_dataset("mnist", task="ranking")
    with pytest.raises(ValueError, match="class 11 has no samples"):
        load_dataset("mnist", classes=(3, 11))


# ------------------------------------------------------------------ synthetic
@pytest.mark.parametrize("name", ["sphere", "gaussian", "lowrank"])
def test_synthetic_sets_shapes_and_determinism(name):
    a = load_dataset(name, n=120, d=30, seed=5)
    b = load_dataset(name, n=120, d=30, seed=5)
    c = load_dataset(name, n=120, d=30, seed=6)
    assert (a.n_train, a.n_test, a.d) == (90, 30, 30)
    assert np.array_equal(a.X_train, b.X_train) and np.array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.X_train, c.X_train)
    y = np.concatenate([a.y_train, a.y_test])
    assert set(np.unique(y)) == {-1.0, 1.0} and abs(np.sum(y)) <= 1
    r = load_dataset(name, n=120, d=30, task="regression")
    assert r.task == "regression" and len(np.unique(r.y_train)) > 50


def test_gaussian_d_defaults_to_n_train():
    ds = load_dataset("gaussian", n_train=200, n_test=50)
    assert ds.d == 200 and ds.n_train == 200


def test_generators():
    S = make_sphere(50, 7, seed=1)
    assert S.shape == (50, 7)
    np.testing.assert_allclose(np.linalg.norm(S, axis=1), 1.0)
    G = make_gaussian(40, seed=2)
    assert G.shape == (40, 40)
    assert np.array_equal(G, make_gaussian(40, seed=2))
    L = make_lowrank(60, 50, rank=4, noise=0.0, seed=3)
    assert L.shape == (60, 50) and np.linalg.matrix_rank(L) == 4
    Ln = make_lowrank(60, 50, rank=4, noise=0.1, seed=3)
    assert np.linalg.matrix_rank(Ln) == 50
    sv = np.linalg.svd(Ln, compute_uv=False)
    assert sv[3] > 5 * sv[4]  # still dominated by the rank-4 signal
    ds = load_dataset("lowrank", n=80, d=40, rank=3, noise=0.0, normalize=False)
    assert np.linalg.matrix_rank(np.vstack([ds.X_train, ds.X_test])) == 3
    with pytest.raises(ValueError, match="rank must be <= 10"):
        make_lowrank(10, 10, rank=11)


def test_teacher_labels():
    X = make_sphere(101, 5, seed=0)
    y = teacher_labels(X, width=50, seed=1)
    assert set(np.unique(y)) == {-1.0, 1.0} and abs(y.sum()) == 1
    assert np.array_equal(y, teacher_labels(X, width=50, seed=1))
    f = teacher_labels(X, width=50, seed=1, binary=False)
    assert abs(f.mean()) < 1e-12 and abs(f.std() - 1) < 1e-12
    assert np.array_equal(np.sign(f - np.median(f))[f != np.median(f)], y[f != np.median(f)])
    with pytest.raises(ValueError, match="constant"):
        teacher_labels(np.ones((4, 3)) * np.array([[1.0], [1.0], [1.0], [1.0]]), width=3)


# ------------------------------------------------------------------ preprocessing
def test_normalize_rows():
    X = np.array([[3.0, 4.0], [1e200, 1e200], [1e-200, 0.0]])
    N = normalize_rows(X)
    np.testing.assert_allclose(np.linalg.norm(N, axis=1), 1.0)
    np.testing.assert_allclose(N[0], [0.6, 0.8])
    assert normalize_rows(np.float32(X[:1])).dtype == np.float32
    assert normalize_rows([[1, 1]]).dtype == np.float64
    assert isinstance(normalize_rows(torch.tensor([[1.0, 2.0]])), np.ndarray)
    with pytest.raises(ValueError, match=r"X has zero-norm rows \(indices \[1\]\)"):
        normalize_rows([[1.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="NaN or Inf"):
        normalize_rows([[1.0, np.nan]])
    with pytest.raises(ValueError, match="must be 2-D"):
        normalize_rows([1.0, 2.0])


def test_center_and_standardize():
    X = np.array([[1.0, 2.0], [3.0, 6.0]])
    np.testing.assert_allclose(center(X).mean(axis=0), 0)
    np.testing.assert_allclose(center(X, mean=[1.0, 2.0]), [[0, 0], [2, 4]])
    Z, mu, sd = standardize(np.array([[1.0, 5.0], [3.0, 5.0]]))
    np.testing.assert_allclose(Z, [[-1, 0], [1, 0]])
    with pytest.raises(ValueError, match="mean must have 2 entries"):
        center(X, mean=[1.0])


def test_binary_task():
    X = np.arange(12.0).reshape(6, 2)
    y = np.array([3, 5, 7, 3, 5, 7])
    Xs, yp = binary_task(X, y, classes=(5, 3))
    assert np.array_equal(Xs, X[[0, 1, 3, 4]]) and np.array_equal(yp, [-1, 1, -1, 1])
    Xs, yp = binary_task(X, y, classes=((3, 7), 5))
    assert len(yp) == 6 and np.array_equal(yp, [1, -1, 1, 1, -1, 1])
    _, yp = binary_task(X[:2], [0, 1])  # inferred: the larger label is +1
    assert np.array_equal(yp, [-1, 1])
    with pytest.raises(ValueError, match="class 4 has no samples"):
        binary_task(X, y, classes=(3, 4))
    with pytest.raises(ValueError, match="y has a single class"):
        binary_task(X, np.ones(6))
    with pytest.raises(ValueError, match="y has 3 classes"):
        binary_task(X, y)
    with pytest.raises(ValueError, match="on both sides"):
        binary_task(X, y, classes=((3, 5), 5))
    with pytest.raises(ValueError, match="different numbers of samples: 6 and 5"):
        binary_task(X, y[:5], classes=(3, 5))


def test_one_hot():
    T = one_hot([2, 0, 2, 1])
    assert np.array_equal(T, [[0, 0, 1], [1, 0, 0], [0, 0, 1], [0, 1, 0]])
    Tc = one_hot([2, 0], classes=[2, 0, 1], centered=True)
    np.testing.assert_allclose(Tc, np.array([[1, 0, 0], [0, 1, 0]]) - 1 / 3)
    np.testing.assert_allclose(Tc.sum(axis=1), 0, atol=1e-15)
    with pytest.raises(ValueError, match="label 5 not in classes"):
        one_hot([5], classes=[0, 1])


def test_train_test_split_stratified():
    X = np.arange(200.0).reshape(100, 2)
    y = np.repeat([0, 1], [80, 20])
    Xtr, Xte, ytr, yte = train_test_split(X, y, n_test=10, seed=1)
    assert len(yte) == 10 and np.sum(yte == 1) == 2
    Xtr2, *_ = train_test_split(X, y, n_test=10, seed=1)
    assert np.array_equal(Xtr, Xtr2)
    _, Xte3, _, _ = train_test_split(X, y, seed=0)
    assert len(Xte3) == 25
    with pytest.raises(ValueError, match="n_test = 100 leaves no training rows"):
        train_test_split(X, y, n_test=100)


def test_make_dataset_infers_the_task():
    X = make_sphere(60, 4, seed=0)
    assert make_dataset(X, np.arange(60) % 2).task == "binary"
    assert make_dataset(X, np.arange(60) % 3).task == "multiclass"
    assert make_dataset(X, np.linspace(0, 1, 60)).task == "regression"
    with pytest.raises(ValueError, match="y has a single class"):
        make_dataset(X, np.zeros(60), task="binary")
    with pytest.raises(ValueError, match="zero-norm rows"):
        make_dataset(np.zeros((10, 3)), np.arange(10) % 2)


# ------------------------------------------------------------------ file loaders: round trips
def _xy(n=20, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, 3, n)


def test_npz_round_trip(tmp_path):
    X, y = _xy()
    np.savez(tmp_path / "a.npz", X=X, y=y)
    X2, y2 = load_file(tmp_path / "a.npz")
    assert np.array_equal(X2, X) and np.array_equal(y2, y)
    np.savez_compressed(tmp_path / "b.npz", X=X.astype(np.float32))
    X3, y3 = load_file(str(tmp_path / "b.npz"))
    assert X3.dtype == np.float32 and y3 is None
    imgs = np.zeros((4, 3, 3), np.uint8) + 1
    np.savez(tmp_path / "c.npz", X=imgs, y=np.array([0, 1, 0, 1]))
    X4, _ = load_file(tmp_path / "c.npz")
    assert X4.shape == (4, 9)


def test_npy_round_trip(tmp_path):
    X, y = _xy()
    np.save(tmp_path / "x.npy", X)
    X2, y2 = load_file(tmp_path / "x.npy")
    assert np.array_equal(X2, X) and y2 is None
    np.save(tmp_path / "xy.npy", np.column_stack([X, y]))
    X3, y3 = load_file(tmp_path / "xy.npy", label_column=-1)
    assert np.array_equal(X3, X) and np.array_equal(y3, y)
    np.save(tmp_path / "y.npy", y)
    X4, y4 = load_file(tmp_path / "x.npy", labels=tmp_path / "y.npy")
    assert np.array_equal(y4, y)


@pytest.mark.parametrize("header", [False, True])
@pytest.mark.parametrize("delim", [",", "\t", " "])
def test_csv_round_trip(tmp_path, header, delim):
    X, y = _xy()
    lines = [delim.join([f"f{j}" for j in range(5)] + ["label"])] if header else []
    lines += [delim.join([repr(float(v)) for v in row] + [str(lab)]) for row, lab in zip(X, y)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    X2, y2 = load_file(tmp_path / "d.csv")
    np.testing.assert_array_equal(X2, X)
    assert np.array_equal(y2, y) and y2.dtype == np.int64
    X3, y3 = load_file(tmp_path / "d.csv", label_column=None)
    assert X3.shape == (20, 6) and y3 is None
    X4, y4 = load_file(tmp_path / "d.csv", label_column=0)
    np.testing.assert_array_equal(y4, X[:, 0])


def _idx_bytes(arr: np.ndarray, magic_type: int = 0x08) -> bytes:
    head = bytes([0, 0, magic_type, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    return head + arr.astype(">u1" if magic_type == 0x08 else ">f4").tobytes()


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 28, 28)).astype(np.uint8)
    labs = rng.integers(0, 10, 7).astype(np.uint8)
    suffix = ".gz" if gz else ""
    opener = gzip.open if gz else open
    with opener(tmp_path / f"train-images-idx3-ubyte{suffix}", "wb") as f:
        f.write(_idx_bytes(imgs))
    with opener(tmp_path / f"train-labels-idx1-ubyte{suffix}", "wb") as f:
        f.write(_idx_bytes(labs))
    X, y = load_file(tmp_path / f"train-images-idx3-ubyte{suffix}")  # partner found by name
    assert X.shape == (7, 784) and X.dtype == np.uint8
    assert np.array_equal(X, imgs.reshape(7, -1)) and np.array_equal(y, labs)
    # explicit labels= and a non-conventional name
    os.rename(tmp_path / f"train-images-idx3-ubyte{suffix}", tmp_path / f"imgs-idx3-ubyte{suffix}")
    X2, y2 = load_file(
        tmp_path / f"imgs-idx3-ubyte{suffix}", labels=tmp_path / f"train-labels-idx1-ubyte{suffix}"
    )
    assert np.array_equal(y2, labs)
    assert load_file(tmp_path / f"imgs-idx3-ubyte{suffix}")[1] is None
    f32 = rng.standard_normal((3, 4)).astype(np.float32)
    (tmp_path / "f.idx").write_bytes(_idx_bytes(f32, 0x0D))
    np.testing.assert_array_equal(load_idx(tmp_path / "f.idx"), f32)


def test_dataset_from_file(tmp_path):
    X, _ = _xy(40, 6)
    y = np.arange(40) % 2
    np.savez(tmp_path / "a.npz", X=X, y=y)
    ds = dataset_from_file(tmp_path / "a.npz", n_test=10, seed=1)
    assert ds.task == "binary" and ds.classes == (1, 0) and (ds.n_train, ds.n_test) == (30, 10)
    assert ds.name == "a.npz" and ds.info["path"].endswith("a.npz")


# ------------------------------------------------------------------ file loaders: errors
def test_missing_directory_empty(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.npz: no such file"):
        load_file(tmp_path / "nope.npz")
    with pytest.raises(ValueError, match="is a directory"):
        load_file(tmp_path)
    (tmp_path / "e.csv").write_bytes(b"")
    with pytest.raises(ValueError, match=r"e\.csv: file is empty"):
        load_file(tmp_path / "e.csv")
    (tmp_path / "a.xyz").write_bytes(b"123")
    with pytest.raises(ValueError, match="unrecognised data file format"):
        load_file(tmp_path / "a.xyz")


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, np.ones((2, 2)))
    p.chmod(0)
    with pytest.raises(ValueError, match="permission denied"):
        load_file(p)


def test_npz_errors(tmp_path):
    X, y = _xy()
    np.savez(tmp_path / "a.npz", X=X, y=y)
    raw = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"t\.npz: not a valid \.npz archive"):
        load_file(tmp_path / "t.npz")
    np.savez(tmp_path / "noX.npz", data=X, y=y)
    with pytest.raises(ValueError, match=r"noX\.npz has no array 'X' \(arrays: data, y\)"):
        load_file(tmp_path / "noX.npz")
    np.savez(tmp_path / "mis.npz", X=X, y=y[:-1])
    with pytest.raises(ValueError, match="X and y have different numbers of samples: 20 and 19"):
        load_file(tmp_path / "mis.npz")
    np.savez(tmp_path / "noy.npz", X=X)
    with pytest.raises(ValueError, match=r"noy\.npz has no labels 'y'"):
        load_xy(tmp_path / "noy.npz")
    np.savez(tmp_path / "obj.npz", X=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="Python objects"):
        load_file(tmp_path / "obj.npz")
    np.savez(tmp_path / "nan.npz", X=np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match=r"X contains NaN or Inf \(first at row 0, column 1\)"):
        load_file(tmp_path / "nan.npz")
    np.savez(tmp_path / "vec.npz", X=np.ones(3))
    with pytest.raises(ValueError, match="must be 2-D"):
        load_file(tmp_path / "vec.npz")
    (tmp_path / "txt.npz").write_text("hello")
    with pytest.raises(ValueError, match="no zip signature"):
        load_file(tmp_path / "txt.npz")
    with pytest.raises(ValueError, match="label_column applies to .csv and .npy"):
        load_file(tmp_path / "a.npz", label_column=0)


def test_npy_errors(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((50, 4)))
    raw = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(raw[:200])
    with pytest.raises(ValueError, match=r"t\.npy: not a valid \.npy array file"):
        load_file(tmp_path / "t.npy")
    np.save(tmp_path / "obj.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Python objects"):
        load_file(tmp_path / "obj.npy")
    (tmp_path / "p.npy").write_bytes(b"\x80\x04junk")  # a pickle is never unpickled
    with pytest.raises(ValueError, match="no NumPy header"):
        load_file(tmp_path / "p.npy")
    with pytest.raises(ValueError, match="label_column 9 is out of range"):
        load_file(tmp_path / "a.npy", label_column=9)
    with pytest.raises(ValueError, match=r"a\.npy has no labels 'y'"):
        load_xy(tmp_path / "a.npy")


def test_csv_errors(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b,label\n1,2,0\n3,x,1\n")
    with pytest.raises(ValueError, match=r"non-numeric value 'x' in data row 2, column 2 \('b'\)"):
        load_file(p)
    p.write_text("1,2,0\n3,,1\n")
    with pytest.raises(ValueError, match="empty field in data row 2, column 2"):
        load_file(p)
    p.write_text("1,2,0\n3,nan,1\n")
    with pytest.raises(ValueError, match=r"NaN or Inf value 'nan' in data row 2, column 2"):
        load_file(p)
    p.write_text("1,2,0\n3,4\n")
    with pytest.raises(ValueError, match="data row 2 has 2 fields, expected 3"):
        load_file(p)
    p.write_text("a,b\n")
    with pytest.raises(ValueError, match="header but no data rows"):
        load_file(p)
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="not a text"):
        load_file(p)


def test_idx_errors(tmp_path):
    imgs = np.ones((5, 4, 4), np.uint8)
    good = _idx_bytes(imgs)
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(good[:-3])
    with pytest.raises(
        ValueError, match="truncated IDX file: shape \\(5, 4, 4\\) needs 96 bytes, file has 93"
    ):
        load_file(p)
    p.write_bytes(good[:6])
    with pytest.raises(ValueError, match="truncated IDX file \\(header needs 16 bytes"):
        load_file(p)
    p.write_bytes(good + b"\x00")
    with pytest.raises(ValueError, match="1 unexpected bytes"):
        load_file(p)
    p.write_bytes(b"\x12\x34\x08\x03" + good[4:])
    with pytest.raises(ValueError, match="wrong magic number 0x12340803"):
        load_file(p)
    g = tmp_path / "x-idx3-ubyte.gz"
    g.write_bytes(gzip.compress(good)[:-12])
    with pytest.raises(ValueError, match="gzip data is truncated"):
        load_file(g)
    g.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="cannot read the file"):
        load_file(g)
    lab = tmp_path / "x-idx1-ubyte"
    lab.write_bytes(_idx_bytes(np.zeros(4, np.uint8)))
    p.write_bytes(good)
    with pytest.raises(ValueError, match="X and labels have different numbers of samples: 5 and 4"):
        load_file(p, labels=lab)
    with pytest.raises(ValueError, match="is an IDX labels file"):
        load_file(lab)
    lab.unlink()
    assert load_file(p)[1] is None
    with pytest.raises(ValueError, match="has no labels 'y'.*idx1"):
        load_xy(p)


def test_load_labels(tmp_path):
    (tmp_path / "l.csv").write_text("label\n1\n0\n1\n")
    assert np.array_equal(load_labels(tmp_path / "l.csv"), [1, 0, 1])
    with pytest.raises(ValueError, match="different numbers of samples: 2 and 3"):
        load_labels(tmp_path / "l.csv", n=2)
