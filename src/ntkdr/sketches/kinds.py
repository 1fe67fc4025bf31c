"""The Gaussian, sparse (CountSketch / sparse JL), PCA and identity sketch kinds.

``gaussian``
    Dense, entries i.i.d. N(0, 1/k).  Applied with one GEMM; cost ``n k d``.
``sparse``
    Sparse JL / CountSketch family: each column has exactly ``s`` non-zeros, at ``s``
    distinct uniformly random rows, with independent random signs and magnitude
    ``1/sqrt(s)``.  ``s = 1`` is CountSketch.  Default ``s = min(8, k)``: a sparse-JL
    map (Kane & Nelson 2014) needs s = Theta(eps^-1 log(1/delta)) for the JL guarantee;
    8 gives JL-quality distortion at the distortions the project measures (eps ~ 0.1-0.5)
    at 8 / k of the Gaussian cost.  Applied as a sparse CSR product; cost ``n s d``.
``pca``
    Data-fitted, deterministic baseline: the top-k right singular vectors of the training
    data, ``S = V_k^T``, fitted with :meth:`Sketch.fit`.  No centering: the map stays
    linear (so ``matrix()`` is exactly what is applied, and sketched inner products / angles
    are taken through the origin, as the NTK needs); centre the data yourself if wanted.
    Solver (option ``svd_solver``): ``"full"`` exact SVD, ``"randomized"`` a randomized
    range finder (Halko, Martinsson & Tropp 2011) with ``n_iter`` power iterations and
    ``n_oversamples`` extra columns, drawn from the sketch's seed, or ``"auto"`` (default):
    randomized when ``max(n, d) > 500`` and ``k < 0.8 min(n, d)``, exact otherwise (the
    rule scikit-learn's PCA uses).  The SVD runs in float64 on X's device.  Signs are
    fixed so that the largest-magnitude entry of each component is positive.  If the data
    has fewer than ``k`` rows, the missing directions are an orthonormal completion drawn
    from the seed (they carry no variance of the training data).  Cost ``n k d``.
``identity``
    No reduction, ``k`` must equal ``d``, so dense and factorized code paths are the same
    code.  Returns a copy of X (never a view of the caller's array).  Cost 0.
"""

from __future__ import annotations

import math
import warnings

import torch

from ntkdr.sketches.base import Sketch, _generator, register
from ntkdr.validation import ArrayLike, check_choice, check_int


@register("gaussian")
class GaussianSketch(Sketch):
    """Dense Gaussian map, entries N(0, 1/k)."""

    kind = "gaussian"

    @property
    def weight(self) -> torch.Tensor:
        """The k x d matrix, CPU float64 (generated on first use)."""
        w = self.__dict__.get("_weight")
        if w is None:
            g = _generator(self.seed)
            w = torch.randn(self.k, self.d, generator=g, dtype=torch.float64) / math.sqrt(self.k)
            self._weight = w
        return w

    def _apply(self, X):
        W = self._cached(X.dtype, X.device, lambda dt, dev: self.weight.to(device=dev, dtype=dt))
        return X @ W.T

    def _matrix(self):
        return self.weight

    def _row_flops(self):
        return self.k * self.d


@register("sparse")
class SparseSketch(Sketch):
    """Sparse JL map: ``s`` non-zeros ``+-1/sqrt(s)`` per column, at ``s`` distinct random rows."""

    kind = "sparse"
    _options = ("batch_size", "s")

    def __init__(self, d, k, seed=0, *, renormalize=False, batch_size=None, s=None):
        super().__init__(d, k, seed, renormalize=renormalize, batch_size=batch_size)
        if s is None:
            s = min(8, self.k)
        s = check_int(s, "s", min_value=1)
        if s > self.k:
            raise ValueError(f"s (non-zeros per column) must be <= k = {self.k}, got {s}")
        self.s = s

    def _draw(self) -> None:
        g = _generator(self.seed)
        d, k, s = self.d, self.k, self.s
        if s * s <= k:
            # Rejection: redraw whole columns that hit a repeated row (P <= ~1/2 each),
            # which leaves every column a uniform s-subset.  O(d s) expected work.
            rows = torch.randint(0, k, (d, s), generator=g)
            while True:
                srt = rows.sort(dim=1).values
                bad = (srt[:, 1:] == srt[:, :-1]).any(dim=1).nonzero().flatten()
                if bad.numel() == 0:
                    break
                rows[bad] = torch.randint(0, k, (bad.numel(), s), generator=g)
        else:
            # Dense case (s ~ k): the s largest of k uniforms per column, in chunks.
            chunk = max(1, (1 << 20) // k)
            rows = torch.cat(
                [
                    torch.rand(min(chunk, d - c), k, generator=g, dtype=torch.float64)
                    .topk(s, dim=1)
                    .indices
                    for c in range(0, d, chunk)
                ]
            )
        signs = torch.randint(0, 2, (d, s), generator=g).to(torch.float64).mul_(2).sub_(1)
        self._rows, self._signs = rows, signs

    @property
    def rows(self) -> torch.Tensor:
        """``(d, s)`` int64: the rows of column j's non-zeros (distinct within a column)."""
        if "_rows" not in self.__dict__:
            self._draw()
        return self._rows

    @property
    def signs(self) -> torch.Tensor:
        """``(d, s)`` float64 of +-1: the signs of those non-zeros."""
        if "_signs" not in self.__dict__:
            self._draw()
        return self._signs

    def _csr(self, dtype, device):
        cols = torch.arange(self.d).repeat_interleave(self.s)
        values = (self.signs / math.sqrt(self.s)).flatten()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            coo = torch.sparse_coo_tensor(
                torch.stack((self.rows.flatten(), cols)), values, (self.k, self.d)
            ).coalesce()
            return coo.to_sparse_csr().to(device=device, dtype=dtype)

    def _apply(self, X):
        S = self._cached(X.dtype, X.device, self._csr)
        return (S @ X.T).T

    def _matrix(self):
        M = torch.zeros(self.k, self.d, dtype=torch.float64)
        cols = torch.arange(self.d).unsqueeze(1).expand(self.d, self.s)
        M[self.rows, cols] = self.signs / math.sqrt(self.s)
        return M

    def _row_flops(self):
        return self.s * self.d

    def _stored(self):
        return self.s * self.d

    def _extra_repr(self):
        return f"s={self.s}"


@register("pca")
class PCASketch(Sketch):
    """Top-k right singular vectors of the training data (no centering); call :meth:`fit` first."""

    kind = "pca"
    _options = ("batch_size", "svd_solver", "n_iter", "n_oversamples")
    _solvers = ("auto", "full", "randomized")

    def __init__(
        self,
        d,
        k,
        seed=0,
        *,
        renormalize=False,
        batch_size=None,
        svd_solver="auto",
        n_iter=None,
        n_oversamples=10,
    ):
        super().__init__(d, k, seed, renormalize=renormalize, batch_size=batch_size)
        self.svd_solver = check_choice(svd_solver, "svd_solver", self._solvers)
        self.n_iter = None if n_iter is None else check_int(n_iter, "n_iter", min_value=0)
        self.n_oversamples = check_int(n_oversamples, "n_oversamples", min_value=0)
        self.components_: torch.Tensor | None = None  # (k, d) float64, CPU
        self.singular_values_: torch.Tensor | None = None  # (k,) float64, CPU
        self.solver_: str | None = None  # the solver "auto" picked

    def _check_ready(self):
        if self.components_ is None:
            raise ValueError("pca sketch must be fit(X) before use")

    def fit(self, X: ArrayLike) -> PCASketch:
        """Fit the top-k right singular vectors of ``X`` (n, d); returns ``self``."""
        t, _ = self._validate_X(X)
        t = t.detach().to(torch.float64)
        n, d, k = t.shape[0], self.d, self.k
        r = min(n, d)
        solver = self.svd_solver
        if solver == "auto":
            solver = "randomized" if max(n, d) > 500 and k < 0.8 * r else "full"
        if solver == "randomized" and k > r:
            solver = "full"
        g = _generator(self.seed)
        if solver == "full":
            _, sv, Vh = torch.linalg.svd(t, full_matrices=False)
        else:
            Vh, sv = self._randomized_svd(t, g)
        V = Vh[:k].cpu()
        sv = sv[:k].cpu()
        if V.shape[0] < k:  # fewer rows than k: complete to an orthonormal basis
            extra = torch.randn(d, k - V.shape[0], generator=g, dtype=torch.float64)
            extra -= V.T @ (V @ extra)
            q, _ = torch.linalg.qr(extra)
            q -= V.T @ (V @ q)  # second pass: orthogonal to V to round-off
            q, _ = torch.linalg.qr(q)
            V = torch.cat((V, q.T))
            sv = torch.cat((sv, sv.new_zeros(k - sv.shape[0])))
        # Deterministic signs: the largest-magnitude entry of each component is positive.
        top = V.abs().argmax(dim=1)
        V = V * torch.sign(V[torch.arange(k), top]).unsqueeze(1)
        self.components_ = V.contiguous()
        self.singular_values_ = sv
        self.solver_ = solver
        self._cache.clear()
        return self

    def _randomized_svd(self, X: torch.Tensor, g: torch.Generator):
        n, d = X.shape
        r = min(n, d)
        l = min(self.k + self.n_oversamples, r)
        n_iter = self.n_iter
        if n_iter is None:
            n_iter = 7 if self.k < 0.1 * r else 4
        omega = torch.randn(d, l, generator=g, dtype=torch.float64).to(X.device)
        Q, _ = torch.linalg.qr(X @ omega)
        for _ in range(n_iter):
            Z, _ = torch.linalg.qr(X.T @ Q)
            Q, _ = torch.linalg.qr(X @ Z)
        B = Q.T @ X
        _, sv, Vh = torch.linalg.svd(B, full_matrices=False)
        return Vh, sv

    def _apply(self, X):
        V = self._cached(
            X.dtype, X.device, lambda dt, dev: self.components_.to(device=dev, dtype=dt)
        )
        return X @ V.T

    def _matrix(self):
        return self.components_

    def _row_flops(self):
        return self.k * self.d

    def _extra_repr(self):
        return f"fitted={self.components_ is not None}"


@register("identity")
class IdentitySketch(Sketch):
    """No reduction (``k == d``): returns a copy of X."""

    kind = "identity"

    def __init__(self, d, k, seed=0, *, renormalize=False, batch_size=None):
        super().__init__(d, k, seed, renormalize=renormalize, batch_size=batch_size)
        if self.k != self.d:
            raise ValueError(
                f"identity sketch needs k == d (no reduction), got k = {self.k}, d = {self.d}"
            )

    def _apply(self, X):
        return X.clone()

    def _matrix(self):
        return torch.eye(self.d, dtype=torch.float64)

    def _row_flops(self):
        return 0

    def _stored(self):
        return 0
