"""Generate ``nt_reference.npz``: neural-tangents' analytic NTK / NNGP of deep ReLU networks.

Not part of the test suite (neural-tangents / JAX are not dependencies of ntkdr).  Run it
in a throwaway environment, outside the repository::

    python3 -m venv /tmp/ntenv
    /tmp/ntenv/bin/pip install 'jax==0.4.30' 'jaxlib==0.4.30' 'neural-tangents==0.6.5' 'tf2jax==0.3.6' numpy
    /tmp/ntenv/bin/python tests/data/make_nt_reference.py

(neural-tangents 0.6.5 imports ``jax.core.Jaxpr``, removed in newer JAX, hence the pins.)

For every depth in DEPTHS and every (w_std, b_std, w_out) in COMBOS it stores the kernels of
``stax.serial(Dense(W_std=w_std, b_std=b_std), Relu(), ... depth times,
Dense(W_std=w_out, b_std=b_std))`` on (X, Z) and on (X, X) (``x2=None``), in float64.
X contains a duplicate row, a parallel (scaled) row and a near-parallel pair, and Z repeats
a row of X, so the ill-conditioned angles are covered.  There any float64 evaluation from
the Gram matrix (neural-tangents' included) is only accurate to about sqrt(eps), so the file
also holds the same kernels evaluated with mpmath at 50 digits from the exact float64 inputs
(``*_mp`` arrays), straight from the recursion in the docstring of ``ntkdr.kernels.relu`` with ``acos`` of the exact
cosine (no ntkdr code involved).
"""

from __future__ import annotations

import os

import jax
import mpmath as mp
import numpy as np

jax.config.update("jax_enable_x64", True)

import neural_tangents as nt  # noqa: E402
from neural_tangents import stax  # noqa: E402

DEPTHS = (1, 2, 3)
COMBOS = (
    (2**0.5, 0.0, 1.0),
    (1.0, 0.5, 1.0),
    (1.7, 0.1, 0.8),
    (0.6, 1.3, 2.0),
)


def make_inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(20221010)
    X = rng.standard_normal((7, 6))
    Z = rng.standard_normal((5, 6))
    X[3] = X[1]  # duplicate row
    X[5] = 2.5 * X[2]  # exactly parallel (scaled) row
    X[6] = X[4] + 1e-7 * rng.standard_normal(6)  # near-parallel pair (4, 6)
    Z[2] = X[0]  # a row of Z equal to a row of X
    Z[4] = -0.5 * X[1]  # anti-parallel
    return X, Z


def network(depth: int, w_std: float, b_std: float, w_out: float):
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(1, W_std=w_std, b_std=b_std, parameterization="ntk"), stax.Relu()]
    layers.append(stax.Dense(1, W_std=w_out, b_std=b_std, parameterization="ntk"))
    return stax.serial(*layers)


def mp_kernels(x, z, depth: int, w_std: float, b_std: float, w_out: float) -> tuple[float, float]:
    """(ntk, nngp) of one pair at 50 significant digits."""
    with mp.workdps(50):
        d = len(x)
        x = [mp.mpf(float(v)) for v in x]
        z = [mp.mpf(float(v)) for v in z]
        w, b, wo = mp.mpf(w_std), mp.mpf(b_std), mp.mpf(w_out)
        nngp = w**2 * mp.fsum(a * c for a, c in zip(x, z)) / d + b**2
        qx = w**2 * mp.fsum(a * a for a in x) / d + b**2
        qz = w**2 * mp.fsum(a * a for a in z) / d + b**2
        ntk = nngp
        for layer in range(depth):
            wl = wo if layer == depth - 1 else w
            root = mp.sqrt(qx * qz)
            cos = min(max(nngp / root, -1), 1) if root else mp.mpf(1)
            theta = mp.acos(cos)
            relu_nngp = root * (mp.sin(theta) + (mp.pi - theta) * cos) / (2 * mp.pi)
            relu_dot = (mp.pi - theta) / (2 * mp.pi)
            qx, qz = wl**2 * qx / 2 + b**2, wl**2 * qz / 2 + b**2
            nngp = wl**2 * relu_nngp + b**2
            ntk = nngp + wl**2 * ntk * relu_dot
        return float(ntk), float(nngp)


def mp_matrices(A, B, *args) -> tuple[np.ndarray, np.ndarray]:
    out = np.array([[mp_kernels(a, b, *args) for b in B] for a in A])
    return out[..., 0], out[..., 1]


def main() -> None:
    X, Z = make_inputs()
    params, ntk_xz, nngp_xz, ntk_xx, nngp_xx = [], [], [], [], []
    mp_xz, mp_xx = [], []
    for depth in DEPTHS:
        for w_std, b_std, w_out in COMBOS:
            _, _, kernel_fn = network(depth, w_std, b_std, w_out)
            k = kernel_fn(X, Z, ("ntk", "nngp"))
            kk = kernel_fn(X, None, ("ntk", "nngp"))
            params.append((depth, w_std, b_std, w_out))
            ntk_xz.append(np.asarray(k.ntk, dtype=np.float64))
            nngp_xz.append(np.asarray(k.nngp, dtype=np.float64))
            ntk_xx.append(np.asarray(kk.ntk, dtype=np.float64))
            nngp_xx.append(np.asarray(kk.nngp, dtype=np.float64))
            mp_xz.append(mp_matrices(X, Z, depth, w_std, b_std, w_out))
            mp_xx.append(mp_matrices(X, X, depth, w_std, b_std, w_out))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nt_reference.npz")
    np.savez_compressed(
        path,
        X=X,
        Z=Z,
        params=np.array(params, dtype=np.float64),
        ntk_xz=np.stack(ntk_xz),
        nngp_xz=np.stack(nngp_xz),
        ntk_xx=np.stack(ntk_xx),
        nngp_xx=np.stack(nngp_xx),
        ntk_xz_mp=np.stack([k[0] for k in mp_xz]),
        nngp_xz_mp=np.stack([k[1] for k in mp_xz]),
        ntk_xx_mp=np.stack([k[0] for k in mp_xx]),
        nngp_xx_mp=np.stack([k[1] for k in mp_xx]),
        versions=np.array([f"neural-tangents {nt.__version__}", f"jax {jax.__version__}"]),
    )
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
