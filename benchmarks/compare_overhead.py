"""Overhead of ntkdr's compare() against the two bare empirical-NTK computations it needs.

For each pair (a model and its factorized copy) it times, interleaved, median of R rounds:
  bare    = ntk(model_a, X) + ntk(model_b, X)   (ntkdr.empirical, same method compare picks)
  compare = compare(model_a, model_b, X, y, repeats=0)  (kernels + spectra, bounds, distances)
  timed   = compare(..., repeats=1)  (plus one warm-up and one timed forward and forward+backward)
and prints the ratios to bare.  Run: python benchmarks/compare_overhead.py [--repeats R]
"""

import argparse
import statistics
import time

import torch
from torch import nn

from ntkdr import DeepReLU, compare, factorize, load_dataset
from ntkdr.nets.deep_ntk import deep_relu_ntk
from ntkdr.nets.empirical import empirical_ntk as ntk


def cases(X: torch.Tensor):
    d = X.shape[1]
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, 1)).double()
    deep = DeepReLU(d, 1024, depth=2, dtype=torch.float64)
    return [
        (
            "MLP 784-256-1, torch.func",
            mlp,
            factorize(mlp, 64),
            lambda m, Z: ntk(m, Z, method="jacobian"),
        ),
        (
            "DeepReLU 784-1024-1024-1, closed form",
            deep,
            factorize(deep, 64, layers=["layers.0"]),
            deep_relu_ntk,
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    ds = load_dataset("mnist")
    X = torch.as_tensor(ds.X_train[: args.n]) * 28.0
    y = torch.as_tensor(ds.y_train[: args.n])
    for name, a, b, kernel in cases(X):
        bare, comp, timed = [], [], []
        for i in range(args.repeats + 1):
            t0 = time.perf_counter()
            kernel(a, X)
            kernel(b, X)
            t1 = time.perf_counter()
            compare(a, b, X, y, repeats=0)
            t2 = time.perf_counter()
            compare(a, b, X, y, repeats=1)
            t3 = time.perf_counter()
            if i:  # round 0 is a warm-up
                bare.append(t1 - t0)
                comp.append(t2 - t1)
                timed.append(t3 - t2)
        tb, tc, tt = (statistics.median(v) for v in (bare, comp, timed))
        print(
            f"{name:40s} bare {tb:7.3f} s | compare {tc:7.3f} s = {tc / tb:4.2f}x | "
            f"with forward/backward timing {tt:7.3f} s = {tt / tb:4.2f}x"
        )


if __name__ == "__main__":
    main()
