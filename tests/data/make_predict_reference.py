"""Generate ``predict_reference.npz``: neural-tangents' predictor outputs on fixed kernels.

Not part of the test suite (neural-tangents / JAX are not dependencies of ntkdr).  Run it
in a throwaway environment, outside the repository::

    python3 -m venv /tmp/ntenv
    /tmp/ntenv/bin/pip install 'jax==0.4.30' 'jaxlib==0.4.30' 'neural-tangents==0.6.5' 'tf2jax==0.3.6' numpy
    /tmp/ntenv/bin/python tests/data/make_predict_reference.py

For two fixed random jointly positive definite kernels -- ``"pd"`` (condition number about
1e2) and ``"ill"`` (a joint spectrum spread over 13 decades, so ``k_train_train`` has a
condition number of about 1e10) -- with 3-output targets, it stores, in float64:

* ``nt.predict.gradient_descent_mse(k_train_train, y_train, learning_rate, diag_reg,
  diag_reg_absolute_scale)`` evaluated at ``t = None`` and at the array ``TS`` of times, for
  every learning rate in ``LRS``, every ``(diag_reg, diag_reg_absolute_scale)`` in ``REGS``
  and every combination of initial outputs in ``COMBOS`` (both arrays -> the pair; train
  only; test only; both the scalar ``0.``);
* ``nt.predict.gp_inference(k_train_train, y_train, diag_reg, diag_reg_absolute_scale)``
  with ``get="nngp"``: the posterior mean and covariance on the test inputs.

Key layout: ``{kernel}__k_train_train`` etc. for the inputs, ``gd__{kernel}__lr{i}__reg{j}__
{combo}__{tinf|tarr}__{train|test}`` and ``gp__{kernel}__reg{j}__{mean|cov}`` for the outputs.
"""

from __future__ import annotations

import os

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402

N_TRAIN, N_TEST, N_OUT = 10, 4, 3
TS = np.array([0.0, 0.5, 3.0, 50.0, 1e3, 1e6])
LRS = (1.0, 0.7)
REGS = ((0.0, False), (0.1, False), (1e-3, True))
COMBOS = ("both", "train", "test", "zeros")


def joint_kernel(rng: np.random.Generator, spectrum: np.ndarray) -> np.ndarray:
    """A symmetric PD (n + m) x (n + m) matrix with the given spectrum and random eigenvectors."""
    q, r = np.linalg.qr(rng.standard_normal((spectrum.size, spectrum.size)))
    q = q * np.sign(np.diag(r))
    g = (q * spectrum) @ q.T
    return (g + g.T) / 2


def main() -> None:
    rng = np.random.default_rng(20260312)
    m = N_TRAIN + N_TEST
    kernels = {
        "pd": joint_kernel(rng, np.linspace(0.05, 3.0, m)),
        "ill": joint_kernel(rng, np.logspace(0.0, -13.0, m)),
    }
    out: dict[str, np.ndarray] = {
        "ts": TS,
        "lrs": np.array(LRS),
        "regs": np.array([r for r, _ in REGS]),
        "regs_absolute": np.array([a for _, a in REGS]),
    }
    for name, g in kernels.items():
        k_dd, k_td, k_tt = g[:N_TRAIN, :N_TRAIN], g[N_TRAIN:, :N_TRAIN], g[N_TRAIN:, N_TRAIN:]
        y = rng.standard_normal((N_TRAIN, N_OUT))
        fx_train_0 = 0.3 * rng.standard_normal((N_TRAIN, N_OUT))
        fx_test_0 = 0.3 * rng.standard_normal((N_TEST, N_OUT))
        out.update(
            {
                f"{name}__k_train_train": k_dd,
                f"{name}__k_test_train": k_td,
                f"{name}__k_test_test": k_tt,
                f"{name}__y_train": y,
                f"{name}__fx_train_0": fx_train_0,
                f"{name}__fx_test_0": fx_test_0,
            }
        )
        inits = {
            "both": (fx_train_0, fx_test_0),
            "train": (fx_train_0, None),
            "test": (None, fx_test_0),
            "zeros": (0.0, 0.0),
        }
        for j, (reg, absolute) in enumerate(REGS):
            for i, lr in enumerate(LRS):
                predict_fn = nt.predict.gradient_descent_mse(
                    jnp.asarray(k_dd), jnp.asarray(y), lr, reg, absolute
                )
                for combo in COMBOS:
                    f0, g0 = inits[combo]
                    for tkey, t in (("tinf", None), ("tarr", TS)):
                        res = predict_fn(t, f0, g0, jnp.asarray(k_td))
                        if combo in ("both", "zeros"):
                            parts = {"train": res[0], "test": res[1]}
                        else:
                            parts = {combo: res}
                        for part, val in parts.items():
                            key = f"gd__{name}__lr{i}__reg{j}__{combo}__{tkey}__{part}"
                            out[key] = np.asarray(val)
            gp_fn = nt.predict.gp_inference(jnp.asarray(k_dd), jnp.asarray(y), reg, absolute)
            gauss = gp_fn("nngp", jnp.asarray(k_td), jnp.asarray(k_tt))
            out[f"gp__{name}__reg{j}__mean"] = np.asarray(gauss.mean)
            out[f"gp__{name}__reg{j}__cov"] = np.asarray(gauss.covariance)
    out["versions"] = np.array([f"neural-tangents {nt.__version__}", f"jax {jax.__version__}"])
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "predict_reference.npz")
    np.savez_compressed(path, **out)
    print(f"wrote {len(out)} arrays to {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
