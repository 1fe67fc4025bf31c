"""The README's API example runs and prints the right numbers (recomputed here independently)."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dense_vs_factorized.py"


def _h1(F: np.ndarray) -> np.ndarray:
    """Two-layer NTK H1 = (x . z)(pi - theta) / (2 pi) in plain numpy (rows of norm 1)."""
    G = np.clip(F @ F.T, -1.0, 1.0)
    return G * (np.pi - np.arccos(G)) / (2 * np.pi)


def _lmin_and_bound(H: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    lmin = float(scipy.linalg.eigvalsh(H, subset_by_index=[0, 0])[0])
    alpha = scipy.linalg.cho_solve(scipy.linalg.cho_factor(H), y)
    return lmin, float(np.sqrt(2 * (y @ alpha) / H.shape[0]))


def _printed(value: str, ref: float) -> None:
    """``value`` is ``ref`` rounded to the printed number of decimals (plus float64 slack)."""
    decimals = len(value.split(".")[1]) if "." in value else 0
    assert abs(float(value) - ref) <= 0.5 * 10.0**-decimals * (1 + 1e-9), (value, ref)


def test_dense_vs_factorized_example_runs():
    res = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    num = r"(\d+\.\d+)"
    lam = re.search(rf"^lambda_min: dense {num}  sketched {num}$", out, re.M)
    bnd = re.search(rf"^bound: +dense {num}  sketched {num}$", out, re.M)
    nets = {
        name: re.search(
            rf"^ *{re.escape(name)}: loss {num} -> {num}, test error {num}, {num} ms/step$",
            out,
            re.M,
        )
        for name in ("dense", "srht k=64")
    }
    macs = re.search(rf"^multiply-adds per step: dense / factorized = {num}$", out, re.M)
    assert lam and bnd and all(nets.values()) and macs, out

    # Independent references: the same data and explicit sketch matrix, numpy / scipy only.
    from ntkdr import TwoLayerReLU, load_dataset, make_sketch

    ds = load_dataset("mnist", n_train=1000, n_test=500)
    X, y = ds.X_train, ds.y_train.astype(np.float64)
    d, m, k = 784, 1024, 64
    S = make_sketch("srht", d, k, seed=0, renormalize=True)
    F = X @ S.matrix().numpy().T
    F /= np.linalg.norm(F, axis=1, keepdims=True)  # renormalize=True
    lmin_d, bound_d = _lmin_and_bound(_h1(X), y)
    lmin_s, bound_s = _lmin_and_bound(_h1(F), y)
    _printed(lam.group(1), lmin_d)
    _printed(lam.group(2), lmin_s)
    _printed(bnd.group(1), bound_d)
    _printed(bnd.group(2), bound_s)

    # Initial loss 1/2 |y - f0|^2 with f0(x) = a . relu(W phi(x)) / sqrt(m) at the seed-0 init
    for name, feats, sketch in (("dense", X, None), ("srht k=64", F, S)):
        net = TwoLayerReLU(d, m, sketch=sketch, seed=0, dtype=torch.float64)
        W, a = net.W.detach().numpy(), net.a.detach().numpy()
        f0 = np.maximum(feats @ W.T, 0.0) @ a / np.sqrt(m)
        loss0 = 0.5 * float(((y - f0) ** 2).sum())
        got = nets[name]
        _printed(got.group(1), loss0)
        assert float(got.group(2)) < 0.5 * loss0  # 100 GD steps at least halve the loss
        # the test error is a count out of 500, better than chance
        err = float(got.group(3))
        assert abs(err * 500 - round(err * 500)) < 1e-6 and err < 0.3

    # MACs per full-batch GD step (theory.cost's documented count): 2 n m p + 2 n m + m p
    n = X.shape[0]

    def step(p):
        return 2 * n * m * p + 2 * n * m + m * p

    _printed(macs.group(1), step(d) / step(k))
