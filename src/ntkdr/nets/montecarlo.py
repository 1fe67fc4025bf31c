r"""Monte Carlo NTK / NNGP: empirical kernels averaged over random initialisations.

For a factory ``model_fn(seed) -> nn.Module`` (a network at initialisation), the estimates are

    NNGP(x, z) = mean_s  (1/c) sum_a f_a(x; p_s) f_a(z; p_s)           (output covariance)
    NTK(x, z)  = mean_s  (1/c) sum_a J_a(x; p_s) . J_a(z; p_s)          (J = df/dp, trained p)

over ``n_samples`` draws ``p_s`` (seeds ``seed, seed + 1, ...``), with the ``c`` outputs
averaged as neural-tangents' ``monte_carlo_kernel_fn`` does (its default ``trace_axes``).
As the widths grow they converge to the analytic kernels (Neal 1996; Lee et al. 2018 for the
NNGP; Jacot et al. 2018 for the NTK); at finite width their mean differs from the limit by
O(1 / width) beyond depth one.  Each entry also gets its standard error,
``std(samples, ddof=1) / sqrt(n_samples)`` (accumulated with Welford's update, one sample at a
time, so memory does not grow with ``n_samples``).  The empirical NTK is
:func:`ntkdr.empirical.ntk` (``torch.func`` Jacobians in row chunks under the budget); the
forward passes run in row chunks too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from ntkdr.nets.empirical import empirical_ntk
from ntkdr.validation import as_matrix, check_int, check_real, check_same_d, to_output

__all__ = ["MonteCarloKernels", "monte_carlo_kernels"]

#: default budget (bytes) for the accumulators, the forward chunks and the Jacobians
DEFAULT_MAX_MEMORY = 1 << 30
_GET = ("ntk", "nngp")


class MonteCarloKernels(NamedTuple):
    """Result of :func:`monte_carlo_kernels`: the means and their standard errors, each
    ``(n, n')`` (``None`` where not requested), and ``n_samples``."""

    ntk: Any
    nngp: Any
    ntk_stderr: Any
    nngp_stderr: Any
    n_samples: int


class _Welford:
    """Running mean and sum of squared deviations of equally shaped tensors."""

    def __init__(self, like: torch.Tensor):
        self.k = 0
        self.mean = torch.zeros_like(like)
        self.m2 = torch.zeros_like(like)

    def add(self, x: torch.Tensor) -> None:
        self.k += 1
        delta = x - self.mean
        self.mean.add_(delta, alpha=1.0 / self.k)
        self.m2.addcmul_(delta, x - self.mean)

    def stderr(self) -> torch.Tensor:
        if self.k < 2:
            return torch.full_like(self.mean, float("nan"))
        return (self.m2 / ((self.k - 1) * self.k)).sqrt_()


def _size(nbytes: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20)):
        if nbytes >= size:
            return f"{nbytes / size:.3g} {unit}"
    return f"{nbytes:.0f} bytes"


def _outputs(model: nn.Module, X: torch.Tensor, rows: int) -> torch.Tensor:
    with torch.no_grad():
        parts = [
            model(X[a : a + rows]).reshape(min(rows, X.shape[0] - a), -1)
            for a in range(0, X.shape[0], rows)
        ]
    return torch.cat(parts)


def _traced(K: torch.Tensor) -> torch.Tensor:
    """``(n, n')`` or ``(n, n', c, c)`` -> the output-averaged ``(n, n')``."""
    if K.ndim == 2:
        return K
    return torch.diagonal(K, dim1=2, dim2=3).mean(dim=2)


def monte_carlo_kernels(
    model_fn: Callable[[int], nn.Module],
    X: Any,
    Z: Any = None,
    n_samples: int = 64,
    get: str | tuple[str, ...] = ("ntk", "nngp"),
    seed: int = 0,
    max_memory: float = DEFAULT_MAX_MEMORY,
) -> MonteCarloKernels:
    """Mean empirical NTK / NNGP over ``n_samples`` initialisations ``model_fn(seed + s)``.

    ``model_fn(seed)`` must return a fresh ``nn.Module`` mapping ``(b, d)`` rows to ``(b,)`` or
    ``(b, c)`` outputs; the kernels take the module's dtype and device (X and Z are cast / moved
    to them).  ``get``: ``"ntk"``, ``"nngp"`` or both (the default).  ``max_memory`` (bytes)
    bounds the accumulators (two ``n x n'`` tensors per kernel), and what is left the forward
    chunks and the Jacobians; if the accumulators alone do not fit, a ``ValueError`` says so.
    Returns a :class:`MonteCarloKernels`; numpy in -> numpy out.
    """
    if not callable(model_fn):
        raise ValueError(
            f"model_fn must be callable (seed -> nn.Module), got {type(model_fn).__name__}"
        )
    n_samples = check_int(n_samples, "n_samples", min_value=2)
    seed = check_int(seed, "seed", min_value=0)
    max_memory = check_real(max_memory, "max_memory", positive=True)
    keys = (get,) if isinstance(get, str) else get
    if not isinstance(keys, tuple) or not keys or any(k not in _GET for k in keys):
        raise ValueError(f"get must be 'ntk', 'nngp' or a tuple of them, got {get!r}")
    same = Z is None or Z is X
    acc: dict[str, _Welford] = {}
    was_numpy = not isinstance(X, torch.Tensor)
    for s in range(n_samples):
        model = model_fn(seed + s)
        if not isinstance(model, nn.Module):
            raise ValueError(f"model_fn must return a torch.nn.Module, got {type(model).__name__}")
        p = next(iter(model.parameters()), None)
        dtype = p.dtype if p is not None else torch.float32
        device = p.device if p is not None else torch.device("cpu")
        if s == 0:
            Xt, _ = as_matrix(X, "X", dtype=dtype, device=device)
            Zt = Xt if same else as_matrix(Z, "Z", dtype=dtype, device=device)[0]
            check_same_d(Xt, Zt)
            n, m = Xt.shape[0], Zt.shape[0]
            acc_bytes = 2 * len(set(keys)) * n * m * Xt.element_size()
            if acc_bytes > max_memory:
                raise ValueError(
                    f"the Monte Carlo accumulators need {_size(acc_bytes)} "
                    f"({2 * len(set(keys))} x {n} x {m}), more than max_memory = "
                    f"{_size(max_memory)}; use fewer rows or raise max_memory"
                )
            left = max(int(max_memory - acc_bytes), 1 << 20)
        elif (dtype, device) != (Xt.dtype, Xt.device):
            raise ValueError("model_fn returned models of different dtypes / devices")
        results = {}
        if "nngp" in keys:
            # rows per forward chunk: a row's activations are bounded by the parameter count
            n_par = sum(q.numel() for q in model.parameters())
            rows = max(1, int(left // max(1, 4 * n_par * Xt.element_size())))
            FX = _outputs(model, Xt, rows)
            FZ = FX if same else _outputs(model, Zt, rows)
            results["nngp"] = FX @ FZ.T / FX.shape[1]
        if "ntk" in keys:
            K = empirical_ntk(model, Xt, None if same else Zt, method="jacobian", max_memory=left)
            results["ntk"] = _traced(K)
        for k, v in results.items():
            acc.setdefault(k, _Welford(v)).add(v.detach())

    def out(key: str, err: bool):
        if key not in acc:
            return None
        t = acc[key].stderr() if err else acc[key].mean
        return to_output(t, was_numpy)

    return MonteCarloKernels(
        out("ntk", False), out("nngp", False), out("ntk", True), out("nngp", True), n_samples
    )
