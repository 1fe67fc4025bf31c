"""Generate ``nt_activations_reference.npz``: neural-tangents' analytic NTK / NNGP of deep
fully connected networks with every activation of :mod:`ntkdr.activations`, and of a few
mixed ``stax.serial`` architectures (for :mod:`ntkdr.stax`).

Not part of the test suite (neural-tangents / JAX are not dependencies of ntkdr).  Run it in
the throwaway environment described in ``make_nt_reference.py``::

    /tmp/ntenv/bin/python tests/data/make_nt_activations_reference.py

Stored, in float64 (``jax_enable_x64``), for X (8 x 6: a duplicate row, a parallel row, a
near-parallel pair, a zero row) and Z (5 x 6: a row of X, an anti-parallel row):

* ``fc_*``: for every activation configuration in ACTS, depth in 1..4 and (w_std, b_std, w_out)
  in COMBOS, the kernels of ``serial(Dense(w, b), Act, ... depth times, Dense(w_out, b))`` on
  (X, Z) and (X, None); ``fc_params`` rows are ``(act index, depth, w, b, w_out)`` and
  ``act_specs`` the JSON list of (name, params) of ACTS.
* ``mix_*``: the same for each architecture in MIXED (JSON in ``mix_specs``).
* ``fc_*_mp``: for the activations whose kernels depend on the angle itself (the a*min + b*max
  family and sign), the same fc kernels at 50 digits with mpmath from the exact float64 inputs
  (``acos`` of the exact cosine, no ntkdr code involved); NaN for the other activations.  On
  (nearly) parallel pairs any float64 evaluation from the Gram matrix, neural-tangents'
  included, is only sqrt(eps)-accurate (and sign amplifies that error with depth).
"""

from __future__ import annotations

import json
import os

import jax
import mpmath as mp
import numpy as np

jax.config.update("jax_enable_x64", True)

import neural_tangents as nt  # noqa: E402
from neural_tangents import stax  # noqa: E402

# (ntkdr activation name, its parameters)
ACTS = [
    ("relu", {}),
    ("leaky_relu", {"negative_slope": 0.1}),
    ("leaky_relu", {"alpha": -0.7}),
    ("abrelu", {"a": 0.5, "b": -1.2}),
    ("abs", {}),
    ("erf", {}),
    ("erf", {"a": 1.5, "b": 0.7, "c": 0.2}),
    ("gelu", {}),
    ("sign", {}),
    ("identity", {}),
]
DEPTHS = (1, 2, 3, 4)
COMBOS = (
    (2**0.5, 0.0, 1.0),
    (1.0, 0.5, 1.0),
    (1.7, 0.1, 0.8),
    (0.6, 1.3, 2.0),
)
# mixed architectures: ("dense", W_std, b_std) or (activation name, params)
MIXED = [
    [
        ("dense", 1.3, 0.2),
        ("erf", {"a": 1.1, "b": 0.9, "c": 0.0}),
        ("dense", 0.9, 0.0),
        ("relu", {}),
        ("dense", 1.5, 0.4),
        ("gelu", {}),
        ("dense", 0.7, 0.1),
    ],
    [("dense", 1.0, 0.0), ("dense", 2.0, 0.3), ("abs", {}), ("dense", 1.2, 0.5)],
    [
        ("dense", 1.4, 0.1),
        ("sign", {}),
        ("dense", 1.0, 0.2),
        ("leaky_relu", {"alpha": 0.2}),
        ("dense", 0.8, 0.3),
    ],
    [("dense", 1.1, 0.3), ("gelu", {}), ("dense", 1.2, 0.0), ("erf", {})],  # ends with Erf
    [("dense", 0.9, 0.6), ("identity", {}), ("dense", 1.3, 0.2), ("relu", {})],
]


def nt_act(name: str, p: dict):
    if name == "relu":
        return stax.Relu()
    if name == "leaky_relu":
        return stax.LeakyRelu(p.get("alpha", p.get("negative_slope")))
    if name == "abrelu":
        return stax.ABRelu(p["a"], p["b"])
    if name == "abs":
        return stax.Abs()
    if name == "erf":
        return stax.Erf(p.get("a", 1.0), p.get("b", 1.0), p.get("c", 0.0))
    if name == "gelu":
        return stax.Gelu()
    if name == "sign":
        return stax.Sign()
    if name == "identity":
        return stax.Identity()
    raise ValueError(name)


def nt_layers(spec):
    return [
        stax.Dense(1, W_std=s[1], b_std=s[2], parameterization="ntk")
        if s[0] == "dense"
        else nt_act(*s)
        for s in spec
    ]


ABRELU = {"relu": (0, 1), "abs": (-1, 1)}


def mp_pair(x, z, name: str, p: dict, depth: int, w: float, b: float, wo: float):
    """(ntk, nngp) of one pair, 50 digits, for the a*min + b*max family and sign."""
    with mp.workdps(50):
        d = len(x)
        x = [mp.mpf(float(v)) for v in x]
        z = [mp.mpf(float(v)) for v in z]
        w, b, wo = mp.mpf(w), mp.mpf(b), mp.mpf(wo)
        g = w**2 * mp.fsum(u * v for u, v in zip(x, z)) / d + b**2
        qx = w**2 * mp.fsum(u * u for u in x) / d + b**2
        qz = w**2 * mp.fsum(u * u for u in z) / d + b**2
        ntk = g
        if name == "leaky_relu":
            lo, hi = p.get("alpha", p.get("negative_slope")), 1
        elif name == "abrelu":
            lo, hi = p["a"], p["b"]
        else:
            lo, hi = ABRELU.get(name, (0, 0))
        lo, hi = mp.mpf(lo), mp.mpf(hi)
        for layer in range(depth):
            wl = wo if layer == depth - 1 else w
            root = mp.sqrt(qx * qz)
            theta = mp.acos(min(max(g / root, -1), 1)) if root else mp.pi / 2
            if name == "sign":
                act, dot = 1 - 2 * theta / mp.pi, mp.mpf(0)
                qx, qz = (mp.mpf(1) if qx else mp.mpf(0)), (mp.mpf(1) if qz else mp.mpf(0))
            else:
                k = (lo - hi) ** 2 / (2 * mp.pi)
                dot = (lo**2 + hi**2) / 2 - k * theta
                act = k * root * mp.sin(theta) + dot * g
                qx, qz = (lo**2 + hi**2) / 2 * qx, (lo**2 + hi**2) / 2 * qz
            qx, qz = wl**2 * qx + b**2, wl**2 * qz + b**2
            g = wl**2 * act + b**2
            ntk = g + wl**2 * ntk * dot
        return float(ntk), float(g)


def mp_kernels(X, Z, *args) -> list[np.ndarray]:
    xz = np.array([[mp_pair(a, c, *args) for c in Z] for a in X])
    xx = np.array([[mp_pair(a, c, *args) for c in X] for a in X])
    return [xz[..., 0], xz[..., 1], xx[..., 0], xx[..., 1]]


def make_inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(20221011)
    X = rng.standard_normal((8, 6))
    Z = rng.standard_normal((5, 6))
    X[3] = X[1]  # duplicate row
    X[5] = 2.5 * X[2]  # exactly parallel (scaled) row
    X[6] = X[4] + 1e-7 * rng.standard_normal(6)  # near-parallel pair (4, 6)
    X[7] = 0.0  # zero row
    Z[2] = X[0]
    Z[4] = -0.5 * X[1]  # anti-parallel
    return X, Z


def kernels(layers, X, Z):
    _, _, kernel_fn = stax.serial(*layers)
    k = kernel_fn(X, Z, ("ntk", "nngp"))
    kk = kernel_fn(X, None, ("ntk", "nngp"))
    return [np.asarray(v, dtype=np.float64) for v in (k.ntk, k.nngp, kk.ntk, kk.nngp)]


def main() -> None:
    X, Z = make_inputs()
    params, fc, fc_mp = [], [], []
    for ai, (name, p) in enumerate(ACTS):
        for depth in DEPTHS:
            for w, b, wo in COMBOS:
                spec = [("dense", w, b), (name, p)] * depth + [("dense", wo, b)]
                fc.append(kernels(nt_layers(spec), X, Z))
                params.append((ai, depth, w, b, wo))
                if name in ("relu", "leaky_relu", "abrelu", "abs", "sign"):
                    fc_mp.append(mp_kernels(X, Z, name, p, depth, w, b, wo))
                else:
                    fc_mp.append([np.full_like(k, np.nan) for k in fc[-1]])
    mix = [kernels(nt_layers(spec), X, Z) for spec in MIXED]
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nt_activations_reference.npz")
    keys = ("ntk_xz", "nngp_xz", "ntk_xx", "nngp_xx")
    np.savez_compressed(
        path,
        X=X,
        Z=Z,
        act_specs=np.array(json.dumps(ACTS)),
        fc_params=np.array(params, dtype=np.float64),
        **{"fc_" + k: np.stack([r[i] for r in fc]) for i, k in enumerate(keys)},
        **{f"fc_{k}_mp": np.stack([r[i] for r in fc_mp]) for i, k in enumerate(keys)},
        mix_specs=np.array(json.dumps(MIXED)),
        **{
            "mix_" + k: np.stack([np.broadcast_to(r[i], r[i].shape) for r in mix])
            for i, k in enumerate(keys)
        },
        versions=np.array([f"neural-tangents {nt.__version__}", f"jax {jax.__version__}"]),
    )
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
