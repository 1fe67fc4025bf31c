"""End-to-end CLI tests: the main job writes a schema-valid report; bad input exits 2 with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from ntkdr.cli import main


def _no_constant(name):
    raise ValueError(f"report.json holds the non-JSON constant {name}")


def load_json_strict(text: str):
    """json.loads that fails on NaN / Infinity (the report writes non-finite numbers as null)."""
    return json.loads(text, parse_constant=_no_constant)


def _h1(F: np.ndarray) -> np.ndarray:
    """Two-layer NTK H1 = (x . z)(pi - theta) / (2 pi) in plain numpy (rows of norm 1)."""
    G = np.clip(F @ F.T, -1.0, 1.0)
    return G * (np.pi - np.arccos(G)) / (2 * np.pi)


def _lmin_and_bound(H: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """lambda_min (scipy) and Arora et al.'s sqrt(2 y^T H^-1 y / n) (scipy Cholesky)."""
    lmin = float(scipy.linalg.eigvalsh(H, subset_by_index=[0, 0])[0])
    alpha = scipy.linalg.cho_solve(scipy.linalg.cho_factor(H), y)
    return lmin, float(np.sqrt(2 * float((y * alpha).sum()) / H.shape[0]))


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


REQUIRED_TOP = {
    "schema_version",
    "dataset",
    "config",
    "dense",
    "sketched",
    "recommended_k",
    "environment",
}


def test_run_quick_writes_report(tmp_path, capsys):
    out = tmp_path / "rep"
    code, stdout, err = run_cli(
        [
            "run",
            "--quick",
            "--dataset",
            "digits",
            "--classes",
            "3,5",
            "--ks",
            "8,32",
            "--output",
            out,
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    rep = load_json_strict((out / "report.json").read_text())
    assert rep.keys() >= REQUIRED_TOP
    assert rep["schema_version"] == "1.3"
    assert rep["environment"]["elementwise"] in ("torch",) or rep["environment"][
        "elementwise"
    ].startswith("numba ")
    assert rep["certificate"]["lower_bound"]["choice"] == "auto"
    assert rep["certificate"]["lower_bound"]["proven"] is True  # small n: every interval proven
    assert rep["dataset"]["d"] == 64 and rep["dataset"]["task"] == "binary"
    kinds = {(e["kind"], e["k"]) for e in rep["sketched"]}
    assert kinds == {(kind, k) for kind in ("gaussian", "sparse", "srht", "pca") for k in (8, 32)}
    for e in rep["sketched"]:
        assert e["lambda_min"]["mean"] > 0
        assert len(e["lambda_min"]["values"]) == (1 if e["kind"] == "pca" else 2)
        assert len(e["net"]["loss"]) == rep["config"]["steps"] + 1
        assert len(e["net"]["predicted_loss"]) == rep["config"]["steps"] + 1
        assert 0 <= e["net"]["test_error"] <= 1
    assert rep["dense"]["lambda_min"] > 0
    # The trained networks decrease their loss; the predicted trajectory starts at the measured
    # initial loss 1/2 |y - u0|^2 (the same n-term sum in another order: n eps relative).
    for net in [rep["dense"]["net"]] + [e["net"] for e in rep["sketched"]]:
        assert net["loss"][-1] < net["loss"][0]
        n = rep["dataset"]["n_train"]
        assert net["predicted_loss"][0] == pytest.approx(net["loss"][0], rel=4 * n * 2.0**-52)

    # One lambda_min ratio and one bound ratio recomputed independently (numpy / scipy) from
    # the data and the explicit sketch matrix: gaussian, k = 8, first sketch seed.
    from ntkdr.data import load_dataset
    from ntkdr.sketches import make_sketch

    ds = load_dataset("digits", classes=(3, 5), n_train=n, n_test=rep["dataset"]["n_test"])
    X, y = ds.X_train, ds.y_train.astype(np.float64)
    assert np.allclose(np.linalg.norm(X, axis=1), 1.0)
    e = next(e for e in rep["sketched"] if (e["kind"], e["k"]) == ("gaussian", 8))
    M = make_sketch("gaussian", 64, 8, seed=e["seeds"][0]).matrix().numpy()
    F = X @ M.T
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    lmin_d, bound_d = _lmin_and_bound(_h1(X), y)
    lmin_s, bound_s = _lmin_and_bound(_h1(F), y)
    assert rep["dense"]["lambda_min"] == pytest.approx(lmin_d, rel=1e-6)
    assert rep["dense"]["bound_true"] == pytest.approx(bound_d, rel=1e-6)
    assert e["lambda_min_ratio"]["values"][0] == pytest.approx(lmin_s / lmin_d, rel=1e-6)
    assert e["bound_ratio"]["values"][0] == pytest.approx(bound_s / bound_d, rel=1e-6)
    for name in (
        "report.md",
        "loss.png",
        "guarantees.png",
        "error.png",
        "cost.png",
        "spectrum.png",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Recommended k" in (out / "report.md").read_text()
    assert not list(out.glob(".*")), "temporary files left behind"
    # the width section: two-layer dense and factorized on the run's rows, k = min(64, d // 4)
    width = rep["width"]
    assert set(width["networks"]) == {"two_layer_dense", "two_layer_factorized"}
    assert width["config"]["k"] == 16 and width["config"]["n"] <= n
    assert "## How wide is wide enough" in (out / "report.md").read_text()
    for name in ("width_deviation.png", "width_cost.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_prints_table(tmp_path, capsys):
    code, stdout, _ = run_cli(
        [
            "run",
            "--quick",
            "--dataset",
            "digits",
            "--classes",
            "0,1",
            "--sketches",
            "gaussian",
            "--ks",
            "16",
            "--steps",
            "5",
            "--output",
            tmp_path,
        ],
        capsys,
    )
    assert code == 0
    assert "λmin ratio" in stdout and "gaussian" in stdout and "report:" in stdout


def test_certify(tmp_path, capsys):
    f = tmp_path / "ev.json"
    code, stdout, err = run_cli(
        [
            "certify",
            "--dataset",
            "digits",
            "--classes",
            "1,7",
            "--kinds",
            "gaussian,srht",
            "--ks",
            "16,64",
            "--seeds",
            "2",
            "--output",
            f,
        ],
        capsys,
    )
    assert code == 0, err
    rep = load_json_strict(f.read_text())
    assert "net" not in rep["dense"]
    rec = rep["recommended_k"]
    assert set(rec["per_kind"]) == {"gaussian", "srht"}
    # The documented rule applied to the evidence: per kind the smallest k with both mean ratios
    # within 0.1 of 1 (and PD for every seed); across kinds the smallest k, ties to the closest.
    dev = {
        (e["kind"], e["k"]): max(
            abs(e["lambda_min_ratio"]["mean"] - 1), abs(e["bound_ratio"]["mean"] - 1)
        )
        for e in rep["sketched"]
        if e["all_pd"]
    }
    ok = sorted((k, v, kind) for (kind, k), v in dev.items() if v <= 0.1)
    for kind in ("gaussian", "srht"):
        assert rec["per_kind"][kind] == min((k for k, _, kd in ok if kd == kind), default=None)
    # An SRHT with k = d = 64 is an orthogonal map: the sketched kernel is the dense one, both
    # ratios are 1, so a recommendation exists and is at most 64.
    srht64 = next(e for e in rep["sketched"] if (e["kind"], e["k"]) == ("srht", 64))
    assert srht64["lambda_min_ratio"]["mean"] == pytest.approx(1.0, abs=1e-9)
    assert srht64["bound_ratio"]["mean"] == pytest.approx(1.0, abs=1e-9)
    assert ok and (rec["k"], rec["kind"]) == (ok[0][0], ok[0][2])
    assert f"recommended k = {rec['k']} ({rec['kind']}), tolerance 0.1" in stdout.splitlines()
    assert "no k in the grid" not in stdout


def _npz(path: Path, X, y):
    np.savez(path, X=X, y=y)
    return path


@pytest.fixture
def good_xy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 10))
    y = np.where(rng.normal(size=60) > 0, 1, 0)
    return X, y


def _bad_cases(tmp_path: Path, good_xy):
    X, y = good_xy
    Xn = X.copy()
    Xn[3, 2] = np.nan
    trunc = tmp_path / "trunc.npz"
    _npz(tmp_path / "full.npz", X, y)
    trunc.write_bytes((tmp_path / "full.npz").read_bytes()[:100])
    csv = tmp_path / "bad.csv"
    csv.write_text("a,b,label\n1,2,0\n3,x,1\n")
    blocked = tmp_path / "file"
    blocked.write_text("")
    return {
        "missing file": (["run", "--data", tmp_path / "nope.npz"], "nope.npz"),
        "truncated": (["run", "--data", trunc], "trunc.npz"),
        "nan": (["run", "--data", _npz(tmp_path / "nan.npz", Xn, y)], "NaN"),
        "mismatch": (
            ["run", "--data", _npz(tmp_path / "mm.npz", X, y[:-1])],
            "different numbers of samples",
        ),
        "missing y": (["run", "--data", tmp_path / "noy.npz"], "'y'"),
        "non-numeric csv": (["run", "--data", csv], "bad.csv"),
        "width 0": (["run", "--dataset", "digits", "--width", "0"], "width must be >= 1"),
        "steps -1": (["run", "--dataset", "digits", "--steps", "-1"], "steps must be >= 0"),
        "unknown sketch": (
            ["run", "--dataset", "digits", "--sketches", "fourier"],
            "unknown sketch kind 'fourier'",
        ),
        "k zero": (["run", "--dataset", "digits", "--ks", "0"], "k must be >= 1"),
        "k > d": (["run", "--dataset", "digits", "--ks", "100"], "exceeds the data dimension"),
        "bad ks": (["run", "--ks", "a,b"], "comma-separated integers"),
        "bad classes": (["run", "--dataset", "digits", "--classes", "3"], "two integer labels"),
        "unknown dataset": (["run", "--dataset", "imagenet"], "imagenet"),
        "output dir": (
            ["run", "--quick", "--dataset", "digits", "--output", blocked / "sub"],
            "cannot create output directory",
        ),
        "unknown option": (["run", "--frobnicate"], "unrecognized arguments"),
        "bad dtype": (["run", "--dtype", "float16"], "invalid choice"),
    }


CASES = [
    "missing file",
    "truncated",
    "nan",
    "mismatch",
    "missing y",
    "non-numeric csv",
    "width 0",
    "steps -1",
    "unknown sketch",
    "k zero",
    "k > d",
    "bad ks",
    "bad classes",
    "unknown dataset",
    "output dir",
    "unknown option",
    "bad dtype",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line(case, tmp_path, capsys, good_xy):
    np.savez(tmp_path / "noy.npz", X=good_xy[0])
    args, fragment = _bad_cases(tmp_path, good_xy)[case]
    code, out, err = run_cli(args, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ntkdr")
    assert fragment in lines[0]
    assert "Traceback" not in err


def test_python_m_entry_point_and_help():
    res = subprocess.run(
        [sys.executable, "-m", "ntkdr", "run", "--help"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0
    assert "examples:" in res.stdout and "--quick" in res.stdout
    res = subprocess.run(
        [sys.executable, "-m", "ntkdr", "kernel", "--data", "missing.npz", "--out", "k.npy"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1


def test_run_goes_on_with_duplicate_rows(tmp_path, capsys):
    """Duplicate inputs make lambda_0 = 0: the run warns in the report and still writes every file."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    keep = (y == 3) | (y == 5)
    X, y = X[keep][:60], y[keep][:60]
    np.savez(tmp_path / "dup.npz", X=np.concatenate([X, X[:3]]), y=np.concatenate([y, y[:3]]))
    out = tmp_path / "rep"
    code, _, err = run_cli(
        ["run", "--data", tmp_path / "dup.npz", "--quick", "--output", out, "--quiet"], capsys
    )
    assert code == 0, err
    rep = json.loads((out / "report.json").read_text())
    assert any("parallel or duplicate rows" in n for n in rep["notes"])
    assert rep["recommended_k"]["k"] is None or all(
        e["all_pd"] for e in rep["sketched"] if e["k"] == rep["recommended_k"]["k"]
    )
    for name in ("report.md", "guarantees.png", "spectrum.png"):
        assert (out / name).exists()
