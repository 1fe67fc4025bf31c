"""The scikit-learn estimators :class:`NTKRegressor` and :class:`NTKClassifier`: optionally sketched inputs, two-layer or deep ReLU NTK, ridge or GD-time predictor, Cholesky or CG solver."""

from __future__ import annotations

import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ntkdr.memory import check_max_memory
from ntkdr.regression.cg import _kernel_cg
from ntkdr.regression.solvers import _gd_filter, kernel_ridge_fit
from ntkdr.sketches.base import SKETCH_KINDS
from ntkdr.validation import (
    check_choice,
    check_int,
    check_k,
    check_real,
    check_symmetric,
    resolve_device,
    resolve_dtype,
)

__all__ = ["NTKRegressor", "NTKClassifier"]

_SOLVERS = ("auto", "cholesky", "cg")


class _NTKBase(BaseEstimator):
    """Shared fit / decision code of :class:`NTKRegressor` and :class:`NTKClassifier`.

    ``_parameter_constraints`` declares every parameter the way scikit-learn does
    (``sklearn.utils._param_validation``); ``fit`` checks them with :meth:`_check_params`
    first, whose one-line messages name the exact problem, then with scikit-learn's
    ``_validate_params`` (which therefore never fires on its own).
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "sketch": [StrOptions({*SKETCH_KINDS, "none"}), None],
        "k": [Interval(Integral, 1, None, closed="left"), None],
        "depth": [Interval(Integral, 1, None, closed="left"), None],
        "layers": [StrOptions({"first", "both"})],
        "ridge": [Interval(Real, 0, None, closed="left")],
        "t": [Interval(Real, 0, None, closed="left"), None],
        "lr": [Interval(Real, 0, None, closed="neither"), None],
        "normalize": ["boolean"],
        "solver": [StrOptions(set(_SOLVERS))],
        "cg_tol": [Interval(Real, 0, None, closed="neither"), None],
        "cg_max_iter": [Interval(Integral, 1, None, closed="left"), None],
        "max_memory": [Interval(Real, 0, None, closed="neither"), str, None],
        "kernel_params": [dict, None],
        "seed": [Interval(Integral, 0, None, closed="left")],
        "dtype": [StrOptions({"float32", "float64"}), torch.dtype],
        "device": [str, torch.device, None],
        "distributed": ["boolean", None],
    }

    def __init__(
        self,
        sketch=None,
        k=None,
        depth=None,
        layers="first",
        ridge=1e-3,
        t=None,
        lr=None,
        normalize=True,
        solver="auto",
        cg_tol=None,
        cg_max_iter=None,
        max_memory=None,
        kernel_params=None,
        seed=0,
        dtype="float64",
        device=None,
        distributed=None,
    ):
        self.sketch = sketch
        self.k = k
        self.depth = depth
        self.layers = layers
        self.ridge = ridge
        self.t = t
        self.lr = lr
        self.normalize = normalize
        self.solver = solver
        self.cg_tol = cg_tol
        self.cg_max_iter = cg_max_iter
        self.max_memory = max_memory
        self.kernel_params = kernel_params
        self.seed = seed
        self.dtype = dtype
        self.device = device
        self.distributed = distributed

    # ---- parameter validation (in fit, per scikit-learn rules) ----
    def _check_params(self, n_features: int) -> dict:
        p: dict[str, Any] = {}
        sk = self.sketch
        if sk is None or (isinstance(sk, str) and sk == "none"):
            p["sketch"] = None
        else:
            if not isinstance(sk, str):
                raise ValueError(
                    f"sketch must be None or one of {', '.join(map(repr, SKETCH_KINDS))}, got {sk!r}"
                )
            p["sketch"] = check_choice(sk, "sketch", SKETCH_KINDS)
        if p["sketch"] is None:
            p["k"] = (
                None  # k is ignored by the dense model (so a grid over `sketch` may keep k fixed)
            )
        elif p["sketch"] == "identity":
            p["k"] = n_features if self.k is None else check_k(self.k, n_features)
            if p["k"] != n_features:
                raise ValueError(
                    f"k must equal d = {n_features} for sketch='identity', got {self.k}"
                )
        else:
            if self.k is None:
                raise ValueError(
                    f"k is required with sketch={p['sketch']!r} (target dimension, 1 <= k <= d)"
                )
            p["k"] = check_k(self.k, n_features)
        p["depth"] = None if self.depth is None else check_int(self.depth, "depth", min_value=1)
        p["layers"] = check_choice(self.layers, "layers", ("first", "both"))
        p["ridge"] = check_real(self.ridge, "ridge", min_value=0.0)
        if self.t is None:
            p["t"] = None
        else:
            p["t"] = check_real(self.t, "t", min_value=0.0)
        p["lr"] = None if self.lr is None else check_real(self.lr, "lr", positive=True)
        if not isinstance(self.normalize, (bool, np.bool_)):
            raise ValueError(f"normalize must be True or False, got {self.normalize!r}")
        p["normalize"] = bool(self.normalize)
        p["solver"] = check_choice(self.solver, "solver", _SOLVERS)
        if p["t"] is not None and p["solver"] == "cg":
            raise ValueError(
                "t (the GD-time predictor) needs an eigendecomposition of the n x n kernel; "
                "use solver='auto' or 'cholesky', or t=None for the ridge solution by CG"
            )
        p["dtype"] = resolve_dtype(self.dtype)
        if p["dtype"] is None:
            raise ValueError("dtype must be 'float32' or 'float64', got None")
        p["cg_tol"] = (
            (1e-6 if p["dtype"] == torch.float64 else 1e-4)
            if self.cg_tol is None
            else check_real(self.cg_tol, "cg_tol", positive=True)
        )
        p["cg_max_iter"] = (
            None
            if self.cg_max_iter is None
            else check_int(self.cg_max_iter, "cg_max_iter", min_value=1)
        )
        p["max_memory"] = check_max_memory(self.max_memory)
        kp = {} if self.kernel_params is None else self.kernel_params
        if not isinstance(kp, dict):
            raise ValueError(f"kernel_params must be a dict or None, got {kp!r}")
        allowed = ("kappa",) if p["depth"] is None else ("w_std", "b_std", "w_out")
        bad = sorted(set(kp) - set(allowed))
        if bad:
            kind = (
                "the two-layer NTK (depth=None)"
                if p["depth"] is None
                else "the deep FC NTK (depth >= 1)"
            )
            raise ValueError(
                f"unknown kernel_params {bad} for {kind}; expected keys among {list(allowed)}"
            )
        p["kernel_params"] = {
            key: check_real(v, f"kernel_params[{key!r}]") for key, v in kp.items()
        }
        p["seed"] = check_int(self.seed, "seed", min_value=0)
        p["device"] = resolve_device(self.device) or torch.device("cpu")
        if self.distributed is not None and not isinstance(self.distributed, (bool, np.bool_)):
            raise ValueError(f"distributed must be None, True or False, got {self.distributed!r}")
        p["distributed"] = None if self.distributed is None else bool(self.distributed)
        self._validate_params()
        return p

    # ---- features and kernel ----
    @staticmethod
    def _normalize_rows(X: torch.Tensor, name: str) -> torch.Tensor:
        norms = X.norm(dim=1, keepdim=True)
        zero = (norms[:, 0] == 0).nonzero().flatten()
        if zero.numel():
            # A bias-free ReLU network is positively homogeneous, f(c x) = c f(x), so f(0) = 0
            # and the NTK of the zero vector with anything is 0: keep such rows at zero.
            warnings.warn(
                f"{name} has zero-norm rows (indices {zero[:5].tolist()}"
                f"{' ...' if zero.numel() > 5 else ''}); they cannot be normalised and are kept as "
                "zero vectors (kernel 0 with every input)",
                UserWarning,
                stacklevel=4,
            )
        return X / torch.where(norms > 0, norms, torch.ones_like(norms))

    def _features(self, X: np.ndarray, p: dict, *, fit: bool) -> torch.Tensor:
        Xt = torch.tensor(
            np.asarray(X), dtype=p["dtype"], device=p["device"]
        )  # a copy: read-only input is fine
        if p["normalize"]:
            Xt = self._normalize_rows(Xt, "X")
        if p["sketch"] is not None:
            if fit:
                from ntkdr.sketches import make_sketch

                sk = make_sketch(p["sketch"], Xt.shape[1], p["k"], seed=p["seed"])
                sk.fit(Xt)
                self.sketch_ = sk
            Xt = torch.as_tensor(self.sketch_(Xt)).to(device=p["device"], dtype=p["dtype"])
            if p["normalize"]:
                Xt = self._normalize_rows(Xt, "the sketched X")
        return Xt

    def _kernel(self, p: dict):
        from ntkdr.kernels import AnalyticNTK, KernelOptions

        opts = KernelOptions(max_memory=p["max_memory"], dtype=p["dtype"], device=p["device"])
        if p["depth"] is None:
            return AnalyticNTK(
                kind="two_layer", layers=p["layers"], options=opts, **p["kernel_params"]
            )
        return AnalyticNTK(kind="fc", depth=p["depth"], options=opts, **p["kernel_params"])

    # ---- fit / decision ----
    def _fit_targets(self, X: np.ndarray, Y: np.ndarray) -> None:
        """Fit the dual coefficients for 2-D targets ``Y`` (n, c)."""
        p = self._check_params(X.shape[1])
        Xf = self._features(X, p, fit=True)
        kern = self._kernel(p)
        n = Xf.shape[0]
        Yt = torch.as_tensor(np.asarray(Y, dtype=np.float64)).to(p["device"])
        itemsize = torch.finfo(p["dtype"]).bits // 8
        dense_bytes = (
            n * n * (itemsize + 16)
        )  # kernel + float64 copy + Cholesky factor / eigenvectors
        budget = p["max_memory"]
        fits = budget is None or dense_bytes <= budget
        solver = p["solver"]
        if solver == "auto":
            solver = "cholesky" if (fits or p["t"] is not None) else "cg"
        if solver == "cholesky" and not fits:
            raise ValueError(
                f"the dense solve needs about {dense_bytes / 2**20:.1f} MiB for n = {n} "
                f"(n x n kernel, float64 copy and factor), over max_memory = {budget / 2**20:.1f} MiB; "
                "use solver='cg' (matrix-free, needs t=None) or raise max_memory"
            )
        self.cg_n_iter_ = None
        self.cg_residual_ = None
        self.lr_ = None
        if solver == "cholesky":
            H = kern(Xf)
            if p["t"] is None:
                coef = kernel_ridge_fit(H, Yt, ridge=p["ridge"])
            else:  # one eigendecomposition serves lr = 1 / lambda_max and the predictor
                check_symmetric(H)
                lam, V = torch.linalg.eigh(H.to(torch.float64))
                lr = p["lr"]
                if lr is None:
                    lr = 1.0 / float(lam[-1]) if float(lam[-1]) > 0 else 1.0
                ts = torch.tensor([p["t"]], dtype=torch.float64, device=lam.device)
                G = _gd_filter(lam, lr, ts, "continuous")[0]
                coef = V @ (G[:, None] * (V.T @ Yt))
                self.lr_ = lr
            del H
        else:
            max_iter = p["cg_max_iter"] or max(n, 100)
            res = _kernel_cg(
                kern,
                Xf,
                Yt.to(torch.float64),
                p["ridge"],
                tol=p["cg_tol"],
                max_iter=max_iter,
                distributed=p["distributed"],
            )
            coef = res.x
            self.cg_n_iter_ = res.n_iter
            self.cg_residual_ = float(np.max(res.residual))
        self.solver_ = solver
        self._fit_spec = p  # predict uses the kernel / features the model was fitted with
        self.X_fit_ = Xf.detach().cpu().numpy()
        self.dual_coef_ = torch.as_tensor(coef).to(torch.float64).cpu().numpy()

    def _decision(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "dual_coef_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        p = self._fit_spec
        Xf = self._features(X, p, fit=False)
        kern = self._kernel(p)
        Xtr = torch.as_tensor(self.X_fit_).to(device=p["device"], dtype=p["dtype"])
        coef = torch.as_tensor(self.dual_coef_).to(device=p["device"], dtype=p["dtype"])
        out = kern.matvec(Xf, coef, Z=Xtr)
        return out.detach().cpu().numpy()


class NTKRegressor(RegressorMixin, _NTKBase):
    """Kernel regression with the infinite-width NTK of a ReLU network, optionally on sketched inputs.

    ``predict(X*) = H(X*, X) @ dual_coef_`` with ``H`` the NTK of the (sketched,
    normalised) inputs and ``dual_coef_ = (H + ridge I)^-1 y`` (``t=None``) or the
    GD-time coefficients (``t`` given).

    Parameters
    ----------
    sketch : None, "none", "gaussian", "sparse", "srht", "pca" or "identity"
        Dimension-reduction map ``S`` applied to the (normalised) inputs before the
        kernel: the infinite-width limit of the factorized network ``W = U S``.
        ``None`` / ``"none"``: the dense NTK.  The sketch is fitted on the training
        inputs (``"pca"`` uses them; the random kinds only draw ``S`` from ``seed``).
    k : int, required with a sketch
        Target dimension, ``1 <= k <= n_features``; ignored when ``sketch`` is None.
    depth : None or int >= 1
        ``None``: the two-layer NTK of Arora et al. (2019) (``H1`` or ``H1 + H2``, see
        ``layers``).  An int: the deep fully connected ReLU NTK with ``depth`` hidden
        layers (neural-tangents' parameterization; ``kernel_params`` may set
        ``w_std``, ``b_std``, ``w_out``).
    layers : "first" or "both"
        Two-layer NTK only: train the first layer (``H1``) or both layers (``H1 + H2``).
    ridge : float >= 0, default 1e-3
        Absolute ridge added to the kernel diagonal (not scaled by n or the trace).
        With normalised inputs the diagonal of ``H1`` is 1/2, so 1e-3 is a small
        regulariser that keeps the solve well posed for duplicate inputs.
        ``ridge=0`` is the ridge-less interpolant and fails loudly if ``H`` is singular.
        Ignored when ``t`` is set.
    t : None or float >= 0
        ``None``: ridge solution.  A number: the GD-time predictor after ``t`` steps of
        (continuous-time) gradient descent with step ``lr`` on
        ``1/2 sum_i (f(x_i) - y_i)^2`` from zero outputs (see :func:`gd_time_predict`).
    lr : None or float > 0
        Step size for ``t``; ``None`` uses ``1 / lambda_max(H)`` (stored as ``lr_``).
    normalize : bool, default True
        Scale every input row (and every sketched row) to unit norm, as the analysis
        assumes.  Zero rows are kept at zero (the NTK of a zero input is 0) with a warning.
    solver : "auto", "cholesky" or "cg"
        ``"cholesky"``: dense ``n x n`` kernel, float64 Cholesky (eigh for ``t``).
        ``"cg"``: matrix-free Jacobi-preconditioned CG with tiled kernel-vector
        products (memory O(n * tile)); ridge solution only.  ``"auto"``: Cholesky when
        the dense solve (about ``n^2 (itemsize + 16)`` bytes) fits ``max_memory``, else CG.
    cg_tol, cg_max_iter : CG relative residual tolerance (default 1e-6 for float64,
        1e-4 for float32) and iteration cap (default ``max(n, 100)``); a
        ``ConvergenceWarning`` is issued when the cap is hit.
    max_memory : None, bytes or a size string ("2GB")
        Memory budget for the kernel tiles and the solver choice; ``None`` = unlimited.
    kernel_params : dict or None
        Extra kernel parameters: ``{"kappa": ...}`` for the two-layer NTK,
        ``{"w_std", "b_std", "w_out"}`` for the deep one.
    seed : int
        Seed of the random sketch.
    dtype : "float64" or "float32"
        Precision of the features and kernel; the linear solves run in float64.
    device : None, "cpu" or "cuda[:i]"
        Torch device for kernel computations (``None`` = cpu).  Inputs and outputs are numpy.
    distributed : None, True or False
        CG solver only: split the kernel-vector products by rows over the ranks of the
        default ``torch.distributed`` group (:func:`kernel_operator`); every rank must call
        ``fit`` with the same data and ends with the same ``dual_coef_``.  ``None``: on when a
        group with more than one rank is initialised (e.g. under ``torchrun``).

    Attributes
    ----------
    X_fit_ : (n, k or d) training features after normalisation / sketching.
    dual_coef_ : (n,) or (n, c) dual coefficients.
    sketch_ : fitted sketch (only when ``sketch`` is set).
    solver_ : solver used ("cholesky" or "cg").
    cg_n_iter_, cg_residual_ : CG iterations and final relative residual (None for Cholesky).
    lr_ : step size used by the GD-time predictor (None when ``t`` is None).
    n_features_in_, feature_names_in_ : as in scikit-learn.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def fit(self, X, y):
        """Fit on ``X`` (n, d) and targets ``y`` (n,) or (n, c)."""
        X, y = validate_data(
            self, X, y, dtype=[np.float64, np.float32], multi_output=True, y_numeric=True
        )
        y = np.asarray(y, dtype=np.float64)
        self._fit_targets(X, y.reshape(len(y), -1))
        if y.ndim == 1:
            self.dual_coef_ = self.dual_coef_[:, 0]
        return self

    def predict(self, X):
        """``H(X, X_train) @ dual_coef_``: shape (n*,) or (n*, c) like the training targets."""
        return self._decision(X)


class NTKClassifier(ClassifierMixin, _NTKBase):
    """Classification by NTK regression on {-1, +1}-coded targets.

    Labels of any kind are encoded with ``LabelBinarizer(neg_label=-1, pos_label=1)``:
    two classes give one ``+-1`` target (``+1`` = ``classes_[1]``); ``C > 2`` classes
    give ``C`` one-vs-rest ``+-1`` targets (one-hot coded as +1 / -1).  ``predict``
    returns the original labels: the sign of the decision for two classes, the argmax
    for more.  Parameters and attributes as in :class:`NTKRegressor`, plus ``classes_``.
    """

    def fit(self, X, y):
        """Fit on ``X`` (n, d) and labels ``y`` (n,) of any kind (at least two classes)."""
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        lb = LabelBinarizer(neg_label=-1, pos_label=1)
        Y = lb.fit_transform(y)
        if len(lb.classes_) < 2:
            raise ValueError(
                f"NTKClassifier needs samples of at least 2 classes; got only one class ({lb.classes_[0]!r})"
            )
        self.classes_ = lb.classes_
        self._fit_targets(X, np.asarray(Y, dtype=np.float64))
        return self

    def decision_function(self, X):
        """Scores: (n*,) for two classes (positive -> ``classes_[1]``), (n*, C) otherwise."""
        check_is_fitted(self, "dual_coef_")
        out = self._decision(X)
        return out[:, 0] if len(self.classes_) == 2 else out

    def predict(self, X):
        """Original labels: sign of the score (two classes) or argmax (more)."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(int)]
        return self.classes_[np.argmax(scores, axis=1)]
