"""Property-based tests (hypothesis) for the public kernel, sketch, theory and regression functions.

Contract under test (README "Bad input" and "Conventions"): for any
input, a public function either returns a correct, finite result of the documented shape,
dtype and array kind, or raises ``ValueError`` -- never another exception, never NaN for
finite input.  Inputs are drawn over random shapes (n 1..20, d 1..16), float32 / float64 /
integer dtypes, numpy / torch, and values with zero rows, duplicate and parallel rows, rows
scaled by powers of two (exact scaling), NaN / Inf, empty arrays and wrong ranks.

References are independent of the library code: kernels from a numpy float64 evaluation
with Kahan's stable angle formula ``theta = 2 atan2(|u - v|, |u + v|)`` on unit vectors,
deep kernels from the plain recursion with ``arccos``, sketches from ``X @ S.matrix().T``,
spectra from ``numpy.linalg.eigvalsh``, solves from ``numpy.linalg.solve``.

Tolerances are keyed by the computing dtype's machine epsilon: angles between nearly parallel
rows carry an ``O(sqrt(eps))`` error in any GEMM-based evaluation (kernels.py docstring), so
kernel entries are compared with ``C sqrt(eps) |x| |z|``; everything else with ``C eps`` times
the natural scale.

Inputs whose magnitudes are so large or small that ``|x|^2 |z|^2`` leaves the dtype's range
are tested separately at the end of the file (finite inputs of extreme magnitude: a correct
finite result or a ``ValueError``, never NaN / Inf).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ntkdr import regression, theory
from ntkdr.kernels import fc_relu_kernels, two_layer_ntk
from ntkdr.sketches import SKETCH_KINDS, make_sketch

FLOATS = (np.float32, np.float64)
EPS = {
    np.dtype(np.float32): float(np.finfo(np.float32).eps),
    np.dtype(np.float64): float(np.finfo(np.float64).eps),
}
# Row scales 2**e with |e| <= SAFE_EXP keep |x|^2 |z|^2 (and the deep-kernel q q') inside the
# dtype's normal range; beyond it see the extreme-magnitude tests at the end of the file.
SAFE_EXP = {np.dtype(np.float32): 16, np.dtype(np.float64): 100}

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------
@st.composite
def float_matrices(draw, n=(1, 20), d=(1, 16), dtype=None, safe=True):
    """An (n, d) float matrix with zero rows, duplicate / parallel rows and power-of-two row scales."""
    dt = np.dtype(dtype if dtype is not None else draw(st.sampled_from(FLOATS)))
    n = draw(st.integers(*n)) if isinstance(n, tuple) else n
    d = draw(st.integers(*d)) if isinstance(d, tuple) else d
    width = 32 if dt == np.float32 else 64
    # Entries 0 or 2^-20 <= |v| <= 1: a row's magnitude is set by its power-of-two scale below.
    lo = 2.0**-20
    elements = st.one_of(
        st.just(0.0), st.floats(lo, 1, width=width), st.floats(-1, -lo, width=width)
    )
    X = draw(hnp.arrays(dt, (n, d), elements=elements)).astype(np.float64)
    special = st.lists(st.integers(0, n - 1), max_size=3)
    for i in draw(special):  # duplicates / parallel copies (lambda_0 = 0)
        j = draw(st.integers(0, n - 1))
        X[j] = X[i] * draw(st.sampled_from([1.0, 1.0, 2.0, 0.5, 8.0]))
    if safe:
        E = SAFE_EXP[dt]
        exps = draw(st.lists(st.integers(-E, E), min_size=n, max_size=n))
        if draw(st.booleans()):  # most draws keep moderate magnitudes
            exps = [e // 8 for e in exps]
        X *= np.exp2(np.asarray(exps, dtype=np.float64))[:, None]
    for i in draw(special):  # zero rows
        X[i] = 0.0
    return X.astype(dt)


def to_kind(X: np.ndarray, kind: str):
    return torch.from_numpy(np.ascontiguousarray(X)) if kind == "torch" else X


def to_np(A) -> np.ndarray:
    return A.detach().cpu().numpy() if isinstance(A, torch.Tensor) else np.asarray(A)


def check_kind_dtype(out, kind: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """The array kind / dtype / shape contract; returns the float64 numpy copy."""
    if kind == "torch":
        assert isinstance(out, torch.Tensor), type(out)
        assert out.dtype == getattr(torch, np.dtype(dtype).name)
    else:
        assert isinstance(out, np.ndarray), type(out)
        assert out.dtype == dtype
    A = to_np(out).astype(np.float64)
    assert A.shape == shape
    assert np.isfinite(A).all(), "non-finite result for finite input"
    return A


def out_dtype(X: np.ndarray) -> np.dtype:
    return X.dtype if X.dtype in (np.float32, np.float64) else np.dtype(np.float32)


# --------------------------------------------------------------------------------------------
# independent references
# --------------------------------------------------------------------------------------------
def _norms(X: np.ndarray) -> np.ndarray:
    """Row norms without under/overflow of the squares."""
    m = np.abs(X).max(axis=1)
    m1 = np.where(m > 0, m, 1.0)
    return m * np.linalg.norm(X / m1[:, None], axis=1)


def ref_angles(X: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(|x||z|, theta) in float64; theta by Kahan's formula on unit vectors (0 for a zero row)."""
    X, Z = X.astype(np.float64), Z.astype(np.float64)
    nx, nz = _norms(X), _norms(Z)
    U = X / np.where(nx > 0, nx, 1.0)[:, None]
    V = Z / np.where(nz > 0, nz, 1.0)[:, None]
    a = np.linalg.norm(U[:, None, :] - V[None, :, :], axis=2)
    b = np.linalg.norm(U[:, None, :] + V[None, :, :], axis=2)
    theta = 2.0 * np.arctan2(a, b)
    theta[(nx == 0)[:, None] | (nz == 0)[None, :]] = 0.0
    return np.outer(nx, nz), theta


def ref_two_layer(X, Z, layers: str, kappa: float) -> tuple[np.ndarray, np.ndarray]:
    """(kernel, scale |x||z|) -- the closed forms of Du et al. 2019."""
    P, th = ref_angles(X, Z)
    H = P * np.cos(th) * (np.pi - th) / (2 * np.pi)
    if layers == "both":
        H = H + kappa**2 * P * (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi)
    return H, P * (1.0 + (kappa**2 if layers == "both" else 0.0))


def ref_fc(X, Z, depth, w, b, w_out) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ntk, nngp, diag_ntk_x, diag_ntk_z): the deep FC recursion (ntkdr.kernels.relu docstring) in float64."""
    X, Z = X.astype(np.float64), Z.astype(np.float64)
    d = X.shape[1]
    nngp = w**2 * (X @ Z.T) / d + b**2
    qx = w**2 * (X * X).sum(1) / d + b**2
    qz = w**2 * (Z * Z).sum(1) / d + b**2
    ntk = nngp.copy()
    dx, dz = qx.copy(), qz.copy()  # diagonal NTKs (theta = 0)
    for layer in range(depth):
        wl2 = w_out**2 if layer == depth - 1 else w**2
        s = np.outer(np.sqrt(qx), np.sqrt(qz))  # the product of q first would underflow
        cos = np.clip(np.divide(nngp, s, out=np.ones_like(nngp), where=s > 0), -1.0, 1.0)
        th = np.arccos(cos)
        relu_nngp = (s * np.sin(th) + (np.pi - th) * nngp) / (2 * np.pi)
        relu_dot = (np.pi - th) / (2 * np.pi)
        nngp = wl2 * relu_nngp + b**2
        ntk = nngp + wl2 * ntk * relu_dot
        qx, qz = wl2 * qx / 2 + b**2, wl2 * qz / 2 + b**2
        dx, dz = qx + wl2 * dx / 2, qz + wl2 * dz / 2
    return ntk, nngp, dx, dz


def assert_psd(K: np.ndarray, eps: float, X: np.ndarray, C: float = 16.0) -> None:
    """Symmetric PSD within round-off: lambda_min >= -C eps n max|K|.

    With (nearly) parallel rows of X the angle between them carries the documented
    O(sqrt(eps)) error (kernels.py docstring), so there the bound is C sqrt(eps) max|K|;
    that exactly duplicated rows stay at the eps level is tested by
    ``test_duplicate_rows_psd_to_round_off`` below.
    """
    n = K.shape[0]
    _, th = ref_angles(X, X)
    near_parallel = bool((th[~np.eye(n, dtype=bool)] < 1e-3).any())
    tol = C * (math.sqrt(eps) if near_parallel else eps * n) * np.abs(K).max()
    lmin = float(np.linalg.eigvalsh(K).min())
    assert lmin >= -tol, (lmin, np.abs(K).max(), near_parallel)


# --------------------------------------------------------------------------------------------
# two_layer_ntk
# --------------------------------------------------------------------------------------------
@FAST
@given(
    X=float_matrices(),
    kind=st.sampled_from(["numpy", "torch"]),
    layers=st.sampled_from(["first", "both"]),
    kappa=st.sampled_from([1.0, 0.5, 3.0]),
    tile=st.one_of(st.none(), st.integers(1, 25)),
)
def test_two_layer_ntk_symmetric(X, kind, layers, kappa, tile):
    n, _ = X.shape
    K = two_layer_ntk(to_kind(X, kind), layers=layers, kappa=kappa, tile=tile)
    A = check_kind_dtype(K, kind, X.dtype, (n, n))
    eps = EPS[X.dtype]
    assert np.array_equal(A, A.T), "H(X, X) must be exactly symmetric"
    ref, scale = ref_two_layer(X, X, layers, kappa)
    # Diagonal: the closed form at theta = 0, |x|^2 / 2 (times 1 + kappa^2 for "both").
    c = 0.5 * (1 + kappa**2) if layers == "both" else 0.5
    sq = (X.astype(np.float64) ** 2).sum(1)
    np.testing.assert_allclose(np.diag(A), c * sq, rtol=8 * X.shape[1] * eps, atol=0)
    # Entries: O(sqrt(eps)) angle error near theta = 0 (documented), O(eps) otherwise.
    assert np.all(np.abs(A - ref) <= 4 * math.sqrt(eps) * scale + 1e-300)
    assert_psd(A, eps, X)


@FAST
@given(
    X=float_matrices(n=(1, 12)),
    Z=float_matrices(n=(1, 12)),
    kind=st.sampled_from(["numpy", "torch"]),
    layers=st.sampled_from(["first", "both"]),
)
def test_two_layer_ntk_cross(X, Z, kind, layers):
    """H(X, Z): shape (n, n'), dtype promoted to the wider of the two, equal to H(Z, X)^T."""
    if X.shape[1] != Z.shape[1]:
        with pytest.raises(ValueError, match="same number of features"):
            two_layer_ntk(to_kind(X, kind), to_kind(Z, kind), layers=layers)
        return
    K = two_layer_ntk(to_kind(X, kind), to_kind(Z, kind), layers=layers)
    dt = np.promote_types(X.dtype, Z.dtype)
    A = check_kind_dtype(K, kind, dt, (X.shape[0], Z.shape[0]))
    ref, scale = ref_two_layer(X, Z, layers, 1.0)
    eps = EPS[np.dtype(dt)]
    assert np.all(np.abs(A - ref) <= 4 * math.sqrt(eps) * scale + 1e-300)
    B = to_np(two_layer_ntk(to_kind(Z, kind), to_kind(X, kind), layers=layers)).astype(np.float64)
    assert np.all(np.abs(A - B.T) <= 4 * math.sqrt(eps) * scale + 1e-300)


# --------------------------------------------------------------------------------------------
# fc_relu_kernels
# --------------------------------------------------------------------------------------------
@FAST
@given(
    X=float_matrices(),
    kind=st.sampled_from(["numpy", "torch"]),
    depth=st.integers(1, 3),
    w=st.sampled_from([2**0.5, 1.0, 0.7]),
    b=st.sampled_from([0.0, 0.1, 1.0]),
    w_out=st.sampled_from([1.0, 2.0]),
    tile=st.one_of(st.none(), st.integers(1, 25)),
)
def test_fc_relu_kernels(X, kind, depth, w, b, w_out, tile):
    n, _ = X.shape
    ntk, nngp = fc_relu_kernels(
        to_kind(X, kind), depth=depth, w_std=w, b_std=b, w_out=w_out, tile=tile
    )
    N = check_kind_dtype(ntk, kind, X.dtype, (n, n))
    G = check_kind_dtype(nngp, kind, X.dtype, (n, n))
    eps = EPS[X.dtype]
    assert np.array_equal(N, N.T) and np.array_equal(G, G.T)
    r_ntk, r_nngp, dx, _ = ref_fc(X, X, depth, w, b, w_out)
    # Diagonal: the recursion at theta = 0 (closed form, no angle noise).
    np.testing.assert_allclose(np.diag(N), dx, rtol=16 * (X.shape[1] + depth) * eps, atol=0)
    scale = np.outer(np.sqrt(dx), np.sqrt(dx))
    assert np.all(np.abs(N - r_ntk) <= 8 * depth * math.sqrt(eps) * scale + 1e-300)
    assert np.all(np.abs(G - r_nngp) <= 8 * depth * math.sqrt(eps) * scale + 1e-300)
    assert_psd(N, eps, X)
    assert_psd(G, eps, X)


@settings(max_examples=25, deadline=None)
@given(
    X=float_matrices(n=(1, 10), d=(1, 8)),
    Z=float_matrices(n=(1, 10), d=(1, 8)),
    depth=st.integers(1, 3),
)
def test_fc_relu_kernels_cross(X, Z, depth):
    if X.shape[1] != Z.shape[1]:
        with pytest.raises(ValueError, match="same number of features"):
            fc_relu_kernels(X, Z, depth=depth)
        return
    ntk, nngp = fc_relu_kernels(X, Z, depth=depth)
    dt = np.promote_types(X.dtype, Z.dtype)
    N = check_kind_dtype(ntk, "numpy", dt, (X.shape[0], Z.shape[0]))
    check_kind_dtype(nngp, "numpy", dt, (X.shape[0], Z.shape[0]))
    r_ntk, _, dx, dz = ref_fc(X, Z, depth, 2**0.5, 0.0, 1.0)
    scale = np.outer(np.sqrt(dx), np.sqrt(dz))
    assert np.all(np.abs(N - r_ntk) <= 8 * depth * math.sqrt(EPS[np.dtype(dt)]) * scale + 1e-300)


# --------------------------------------------------------------------------------------------
# bad inputs to the kernels: ValueError, nothing else
# --------------------------------------------------------------------------------------------
@st.composite
def bad_arrays(draw):
    """Arrays the kernels must reject with ValueError, with a fragment of the expected message."""
    n, d = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    case = draw(
        st.sampled_from(
            [
                "nan",
                "inf",
                "-inf",
                "empty_rows",
                "empty_cols",
                "1d",
                "3d",
                "0d",
                "str",
                "object",
                "complex",
                "ragged",
            ]
        )
    )
    dt = draw(st.sampled_from(FLOATS))
    X = np.ones((n, d), dtype=dt)
    if case in ("nan", "inf", "-inf"):
        X[draw(st.integers(0, n - 1)), draw(st.integers(0, d - 1))] = float(case)
        return X, "NaN or Inf", d
    return (
        *{
            "empty_rows": (np.ones((0, d), dt), "empty"),
            "empty_cols": (np.ones((n, 0), dt), "empty"),
            "1d": (np.ones(d, dt), "2-D"),
            "3d": (np.ones((n, d, 2), dt), "2-D"),
            "0d": (np.float64(1.0), "2-D"),
            "str": (np.full((n, d), "a"), "numeric"),
            "object": (np.array([[object()] * d] * n), "numeric"),
            "complex": (np.ones((n, d), np.complex128), "real"),
            "ragged": ([[1.0] * d, [1.0] * (d + 1)], "numeric"),
        }[case],
        d,
    )


@settings(max_examples=60, deadline=None)
@given(
    bad=bad_arrays(),
    kind=st.sampled_from(["numpy", "torch"]),
    as_z=st.booleans(),
    fn=st.sampled_from(["two_layer", "fc"]),
)
def test_kernels_reject_bad_arrays(bad, kind, as_z, fn):
    A, fragment, d = bad
    if kind == "torch" and isinstance(A, np.ndarray) and A.dtype.kind in "fc":
        A = torch.from_numpy(A)
    good = np.ones((3, d))
    args = (good, A) if as_z else (A,)
    f = two_layer_ntk if fn == "two_layer" else (lambda *a: fc_relu_kernels(*a, depth=2))
    with pytest.raises(ValueError, match=fragment):
        f(*args)


@st.composite
def integer_matrices(draw):
    dt = np.dtype(draw(st.sampled_from([np.int8, np.int32, np.int64, np.uint8, np.bool_])))
    shape = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    if dt == np.bool_:
        elements = st.booleans()
    else:
        elements = st.integers(0 if dt.kind == "u" else -100, 100)
    return draw(hnp.arrays(dt, shape, elements=elements))


@settings(max_examples=30, deadline=None)
@given(X=integer_matrices(), kind=st.sampled_from(["numpy", "torch"]))
def test_kernels_integer_input_gives_float32(X, kind):
    Xk = to_kind(X, kind)
    n = X.shape[0]
    K = two_layer_ntk(Xk, layers="both")
    A = check_kind_dtype(K, kind, np.dtype(np.float32), (n, n))
    ref, scale = ref_two_layer(X.astype(np.float64), X.astype(np.float64), "both", 1.0)
    assert np.all(np.abs(A - ref) <= 4 * math.sqrt(EPS[np.dtype(np.float32)]) * scale + 1e-30)
    ntk, _ = fc_relu_kernels(Xk, depth=2)
    check_kind_dtype(ntk, kind, np.dtype(np.float32), (n, n))


@settings(max_examples=40, deadline=None)
@given(
    arg=st.sampled_from(
        ["tile", "max_memory", "depth", "w_std", "b_std", "w_out", "kappa", "layers"]
    ),
    value=st.one_of(
        st.integers(-3, 0),
        st.floats(-1e6, 1e6),
        st.sampled_from([math.nan, math.inf, -math.inf]),
        st.none(),
        st.text(max_size=3),
        st.booleans(),
    ),
)
@example(arg="w_std", value=4.3e-104)  # q(x) q(z) ~ 1e-414 underflows if formed as a product
def test_kernel_options_valid_or_value_error(arg, value):
    """A valid option value gives the correct kernel, any other a ValueError naming the option."""
    X = np.random.default_rng(0).standard_normal((4, 3))
    two_layer_args = {"tile", "max_memory", "kappa", "layers"}

    def call():
        if arg in two_layer_args:
            return [two_layer_ntk(X, **{arg: value})]
        return list(fc_relu_kernels(X, **{arg: value}))

    if not _option_is_valid(arg, value):
        with pytest.raises(ValueError, match=arg):
            call()
        return
    out = call()
    eps = EPS[np.dtype(np.float64)]
    if arg in two_layer_args:
        layers = value if arg == "layers" else "first"
        kappa = value if arg == "kappa" else 1.0
        ref, scale = ref_two_layer(X, X, layers, kappa)
        refs, scales = [ref], [scale]
    else:
        kw = {"depth": 1, "w": 2**0.5, "b": 0.0, "w_out": 1.0}
        kw[{"w_std": "w", "b_std": "b"}.get(arg, arg)] = value
        r_ntk, r_nngp, dx, _ = ref_fc(X, X, **kw)
        refs, scales = [r_ntk, r_nngp], [np.outer(np.sqrt(dx), np.sqrt(dx))] * 2
    for K, ref, scale in zip(out, refs, scales):
        assert K.shape == (4, 4) and np.isfinite(K).all()
        assert np.all(np.abs(K - ref) <= 8 * math.sqrt(eps) * scale + 1e-300)


def _option_is_valid(arg, value) -> bool:
    """The documented domain of each option (validation.check_int / check_real / check_choice)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    finite = number and math.isfinite(value)
    if arg == "layers":
        return value in ("first", "both")
    if arg in ("tile", "depth"):  # an integer >= 1; tile=None means untiled, depth has no None
        integer = isinstance(value, int) and not isinstance(value, bool)
        return (arg == "tile" and value is None) or (integer and value >= 1)
    if arg == "max_memory":  # None: the default budget; else it must hold the 4 x 4 float64 result
        return value is None or (finite and value >= 4 * 4 * 8)
    if arg == "b_std":
        return finite and value >= 0
    return finite and value > 0  # w_std, w_out, kappa


def test_kernel_memory_budget_names_the_size():
    X = np.ones((64, 3))
    with pytest.raises(ValueError, match=r"needs .* GiB .*64 x 64.*max_memory"):
        two_layer_ntk(X, max_memory=1024)
    out = np.empty((64, 64))
    K = two_layer_ntk(X, max_memory=1024, out=out)  # out= bypasses the budget for the result
    assert K is out and np.isfinite(out).all()


# --------------------------------------------------------------------------------------------
# sketches
# --------------------------------------------------------------------------------------------
def _k_valid(kind: str, d: int, k) -> bool:
    ok_int = isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_))
    return ok_int and 1 <= k <= d and (kind != "identity" or k == d)


@FAST
@given(
    data=st.data(),
    kind=st.sampled_from(SKETCH_KINDS),
    seed=st.integers(0, 2**31),
    kind_arr=st.sampled_from(["numpy", "torch"]),
    renormalize=st.booleans(),
)
def test_make_sketch_and_call(data, kind, seed, kind_arr, renormalize):
    X = data.draw(float_matrices())
    n, d = X.shape
    k = data.draw(
        st.one_of(
            st.integers(-2, d + 3),
            st.sampled_from([d, 1]),
            st.sampled_from([None, 1.0, float(d), True, "2", np.int64(1)]),
        ),
        label="k",
    )
    if not _k_valid(kind, d, k):
        with pytest.raises(ValueError, match=r"\bk\b"):
            make_sketch(kind, d, k, seed=seed, renormalize=renormalize)
        return
    S = make_sketch(kind, d, k, seed=seed, renormalize=renormalize)
    Xk = to_kind(X, kind_arr)
    if kind == "pca":
        with pytest.raises(ValueError, match="fit"):
            S(Xk)
        assert S.fit(Xk) is S
    M = S.matrix().numpy()
    assert M.shape == (k, d) and M.dtype == np.float64
    ref = X.astype(np.float64) @ M.T
    eps = EPS[X.dtype]
    # Linear map: S(X) = X M^T up to round-off of a d-term sum.
    bound = 4 * (d + 4) * eps * (np.abs(X.astype(np.float64)) @ np.abs(M).T) + 1e-300
    # With renormalize a row whose sketch is zero cannot be normalised: a zero row of X must
    # raise; a row whose exact sketch exceeds the round-off bound must not.  Rows in between
    # (sketched to within round-off of zero by cancellation) may compute exactly 0 or not.
    must_raise = renormalize and bool((np.abs(X).max(axis=1) == 0).any())
    may_raise = renormalize and bool((np.abs(ref) <= bound).all(axis=1).any())
    if must_raise:
        with pytest.raises(ValueError, match="zero-norm rows"):
            S(Xk)
        return
    try:
        Y = S(Xk)
    except ValueError as exc:
        assert may_raise and "zero-norm rows" in str(exc), str(exc)
        return
    A = check_kind_dtype(Y, kind_arr, X.dtype, (n, int(k)))
    if renormalize:
        np.testing.assert_allclose(np.linalg.norm(A, axis=1), 1.0, rtol=0, atol=8 * eps * (k + 1))
        nr = np.linalg.norm(ref, axis=1, keepdims=True)
        rel = bound / np.where(nr > 0, nr, 1.0)
        # Direction preserved where the row is not (nearly) annihilated by the map.
        solid = nr[:, 0] > 1e3 * bound.max(axis=1)
        assert np.all(
            np.abs(A - ref / np.where(nr > 0, nr, 1.0))[solid] <= 4 * rel[solid] + 8 * eps
        )
    else:
        assert np.all(np.abs(A - ref) <= bound)
    # Deterministic given the seed: a fresh map gives identical output.
    S2 = make_sketch(kind, d, int(k), seed=seed, renormalize=renormalize)
    if kind == "pca":
        S2.fit(Xk)
    np.testing.assert_array_equal(to_np(S2(Xk)), to_np(Y))


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(SKETCH_KINDS),
    d=st.integers(1, 16),
    bad=bad_arrays(),
    kind_arr=st.sampled_from(["numpy", "torch"]),
    wrong_d=st.booleans(),
)
def test_sketch_call_rejects_bad_input(kind, d, bad, kind_arr, wrong_d):
    S = make_sketch(kind, d, d, seed=0)
    if kind == "pca":
        S.fit(np.eye(d))
    if wrong_d:
        with pytest.raises(ValueError, match=f"expects d = {d}"):
            S(to_kind(np.ones((3, d + 1)), kind_arr))
        return
    A, fragment, _ = bad
    if kind_arr == "torch" and isinstance(A, np.ndarray) and A.dtype.kind in "fc":
        A = torch.from_numpy(A)
    if (
        isinstance(A, (np.ndarray, torch.Tensor))
        and A.ndim == 2
        and A.shape[1] not in (0, d)
        and fragment != "empty"
    ):
        fragment = f"{fragment}|expects d = {d}"
    with pytest.raises(ValueError, match=fragment):
        S(A)


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(SKETCH_KINDS),
    d=st.one_of(st.integers(-2, 0), st.just(2.0), st.just(True), st.none(), st.just("4")),
    seed=st.one_of(st.integers(0, 5), st.integers(-5, -1), st.just(1.5), st.none()),
)
def test_make_sketch_bad_d_or_seed(kind, d, seed):
    with pytest.raises(ValueError, match=r"\b(d|k|seed)\b"):
        make_sketch(kind, d, 1, seed=seed)


@pytest.mark.parametrize("kind", [None, "", "Gaussian", "fourier", 3, ("gaussian",)])
def test_make_sketch_unknown_kind(kind):
    with pytest.raises(ValueError, match="unknown sketch kind"):
        make_sketch(kind, 4, 2)


# --------------------------------------------------------------------------------------------
# theory.lambda_min, theory.generalization_bound, regression.kernel_ridge_fit
# --------------------------------------------------------------------------------------------
@st.composite
def gram_matrices(draw):
    """(H as float numpy, how it was made): NTK Gram matrices (PSD, possibly singular) or
    random symmetric matrices (indefinite)."""
    how = draw(st.sampled_from(["ntk", "ntk", "symmetric", "gram"]))
    dt = np.dtype(draw(st.sampled_from(FLOATS)))
    if how == "ntk":
        X = draw(float_matrices(dtype=dt))
        return two_layer_ntk(X), how
    n = draw(st.integers(1, 20))
    width = 32 if dt == np.float32 else 64
    lo = 2.0**-20
    elements = st.one_of(
        st.just(0.0), st.floats(lo, 1, width=width), st.floats(-1, -lo, width=width)
    )
    A = draw(hnp.arrays(dt, (n, n), elements=elements))
    E = SAFE_EXP[dt] // 2
    A = A.astype(np.float64) * 2.0 ** draw(st.integers(-E, E))
    H = (A + A.T) / 2 if how == "symmetric" else A @ A.T
    return H.astype(dt), how


@FAST
@given(G=gram_matrices(), kind=st.sampled_from(["numpy", "torch"]))
def test_lambda_min(G, kind):
    H, _ = G
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", theory.SingularKernelWarning)
        lmin = theory.lambda_min(to_kind(H, kind))
    assert isinstance(lmin, float) and math.isfinite(lmin)
    H64 = H.astype(np.float64)
    ev = np.linalg.eigvalsh(H64)
    scale = max(np.abs(H64).max(), np.finfo(np.float64).tiny)
    assert abs(lmin - ev[0]) <= 64 * H.shape[0] * EPS[np.dtype(np.float64)] * scale
    assert (
        lmin <= H64.diagonal().min() + 64 * EPS[np.dtype(np.float64)] * scale
    )  # Rayleigh quotient


@FAST
@given(
    G=gram_matrices(),
    data=st.data(),
    kind=st.sampled_from(["numpy", "torch"]),
    delta=st.sampled_from([0.05, 0.5, 1e-6]),
)
def test_generalization_bound(G, data, kind, delta):
    H, _ = G
    n = H.shape[0]
    c = data.draw(st.sampled_from([None, 1, 3]), label="outputs")
    shape = (n,) if c is None else (n, c)
    y = data.draw(
        hnp.arrays(np.float64, shape, elements=st.floats(-4, 4, allow_subnormal=False)), label="y"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", theory.SingularKernelWarning)
        r = theory.generalization_bound(to_kind(H, kind), to_kind(y, kind), delta=delta)
    for name in ("value", "complexity", "extra", "total", "lambda_min", "lambda_max"):
        assert not math.isnan(getattr(r, name)), name
    assert r.n == n and r.n_outputs == (1 if c is None else c) and r.delta == delta
    assert r.lambda_min <= r.lambda_max
    assert math.isfinite(r.lambda_min) and math.isfinite(r.lambda_max)
    # Expected is_pd from numpy's spectrum: documented rule lambda_min > n eps(dtype) lambda_max
    # and a float64 Cholesky that succeeds.  Both eigenvalue computations are accurate to
    # n eps64 ||H|| (backward stable); Cholesky succeeds above 2 n (n + 1) eps64 ||H||
    # (see test_kernel_ridge_fit).  Within those margins of the threshold either answer is right.
    ev = np.linalg.eigvalsh(H.astype(np.float64))
    e64, norm = EPS[np.dtype(np.float64)], float(np.abs(ev).max())
    tol, err = n * EPS[H.dtype] * abs(ev[-1]), n * e64 * norm
    if ev[0] > max(tol + 2 * err, 2 * n * (n + 1) * e64 * norm):
        assert r.is_pd, (ev[0], tol, r.message)
    elif ev[0] < tol - 2 * err:
        assert not r.is_pd, (ev[0], tol, r.message)
    if not r.is_pd:
        assert r.value == math.inf and r.complexity == math.inf and "positive definite" in r.message
        return
    H64 = H.astype(np.float64)
    Y = y.reshape(n, -1)
    comp = float((Y * np.linalg.solve(H64, Y)).sum())
    cond = r.lambda_max / r.lambda_min
    assert r.complexity >= 0
    assert (
        abs(r.complexity - comp)
        <= 1e3 * n * EPS[np.dtype(np.float64)] * cond * max(comp, 1e-300) + 1e-300
    )
    assert r.value == pytest.approx(math.sqrt(2 * r.complexity / n), rel=1e-12)
    assert r.total == pytest.approx(r.value + r.extra, rel=1e-12)
    if r.lambda_min > 0:
        assert r.extra == pytest.approx(
            math.sqrt(max(math.log(n / (r.lambda_min * delta)), 0.0) / n), rel=1e-12
        )


@FAST
@given(G=gram_matrices(), data=st.data(), kind=st.sampled_from(["numpy", "torch"]))
def test_kernel_ridge_fit(G, data, kind):
    H, how = G
    n = H.shape[0]
    H64 = H.astype(np.float64)
    scale = float(np.abs(H64).max()) or 1.0
    ridge = data.draw(st.sampled_from([0.0, 1e-3 * scale, scale]), label="ridge")
    c = data.draw(st.sampled_from([None, 2]), label="outputs")
    y = data.draw(
        hnp.arrays(
            np.float64,
            (n,) if c is None else (n, c),
            elements=st.floats(-4, 4, allow_subnormal=False),
        ),
        label="y",
    )
    M = H64 + ridge * np.eye(n)
    ev = np.linalg.eigvalsh(M)
    # The expected outcome from the spectrum of M = H + ridge I (float64, as the solver):
    # Cholesky runs to completion when lambda_min(M) > 2 n (n + 1) eps ||M||_2 (Higham, Accuracy
    # and Stability, Thm 10.7 with kappa bounded by ||M|| / lambda_min), and cannot succeed on a
    # matrix with lambda_min(M) below -n eps ||M||_2 (its backward error); in between (a singular
    # M, e.g. duplicate rows with ridge 0) either outcome is round-off, both are accepted.
    e64, norm = EPS[np.dtype(np.float64)], float(np.abs(ev).max())
    call = lambda: regression.kernel_ridge_fit(to_kind(H, kind), to_kind(y, kind), ridge=ridge)  # noqa: E731
    if ev[0] < -n * e64 * norm:
        with pytest.raises(ValueError, match="not numerically positive definite"):
            call()
        return
    if ev[0] > 2 * n * (n + 1) * e64 * norm:
        alpha = call()
    else:
        try:
            alpha = call()
        except ValueError as exc:
            assert "not numerically positive definite" in str(exc) and "ridge" in str(exc)
            return
    A = check_kind_dtype(alpha, kind, H.dtype, y.shape)
    resid = np.abs(M @ A.reshape(n, -1) - y.reshape(n, -1)).max()
    eps = EPS[H.dtype]
    cond = abs(ev[-1]) / max(np.abs(ev).min(), 1e-300)
    # alpha is returned in H's dtype: rounding it costs eps |alpha| relative and, below the
    # dtype's normal range, up to its smallest subnormal absolute (float32 alpha ~ 1e-210 is 0)
    tiny = float(np.finfo(H.dtype).smallest_subnormal)
    tol = (
        1e3
        * n
        * (
            EPS[np.dtype(np.float64)] * cond * np.abs(y).max()
            + np.abs(M).max() * (eps * np.abs(A).max() + tiny)
        )
        + 1e-300
    )
    assert resid <= tol, (resid, tol)


@settings(max_examples=40, deadline=None)
@given(
    case=st.sampled_from(
        [
            "nonsquare",
            "asymmetric",
            "nan",
            "inf",
            "empty",
            "1d",
            "3d",
            "y_len",
            "y_nan",
            "y_3d",
            "y_str",
            "ridge",
            "delta",
        ]
    ),
    fn=st.sampled_from(["lambda_min", "bound", "ridge_fit"]),
)
def test_theory_regression_reject_bad_input(case, fn):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((5, 3))
    H, y = two_layer_ntk(X), np.ones(5)
    kw: dict = {}
    fragment = {
        "nonsquare": "square",
        "asymmetric": "symmetric",
        "nan": "NaN or Inf",
        "inf": "NaN or Inf",
        "empty": "empty",
        "1d": "2-D",
        "3d": "2-D",
        "y_len": "different numbers of samples",
        "y_nan": "y contains NaN",
        "y_3d": "y must be 1-D",
        "y_str": "numeric",
        "ridge": "ridge",
        "delta": "delta",
    }[case]
    if case == "nonsquare":
        H = H[:, :4]
    elif case == "asymmetric":
        H = H.copy()
        H[0, 1] += 0.5
    elif case in ("nan", "inf"):
        H = H.copy()
        H[2, 2] = float(case)
    elif case == "empty":
        H = np.zeros((0, 0))
    elif case == "1d":
        H = H[0]
    elif case == "3d":
        H = H[None]
    elif case == "y_len":
        y = y[:4]
    elif case == "y_nan":
        y = y.copy()
        y[1] = np.nan
    elif case == "y_3d":
        y = y[:, None, None]
    elif case == "y_str":
        y = np.array(["a"] * 5)
    elif case == "ridge":
        kw = {"ridge": -1.0}
    elif case == "delta":
        kw = {"delta": 1.5}
    y_case = case.startswith("y_")
    # inapplicable pairs are discarded (not passed vacuously): lambda_min takes no y / ridge /
    # delta, the bound no ridge, the ridge fit no delta
    assume(not (fn == "lambda_min" and (y_case or case in ("ridge", "delta"))))
    assume(not (fn == "bound" and case == "ridge" or fn == "ridge_fit" and case == "delta"))
    call = {
        "lambda_min": lambda: theory.lambda_min(H),
        "bound": lambda: theory.generalization_bound(H, y, **kw),
        "ridge_fit": lambda: regression.kernel_ridge_fit(H, y, **kw),
    }[fn]
    with pytest.raises(ValueError, match=fragment):
        call()


# --------------------------------------------------------------------------------------------
# Finite inputs of extreme magnitude (formerly xfail bugs in kernels / sketches / regression / theory)
# --------------------------------------------------------------------------------------------
def _x_unit():
    return np.random.default_rng(3).standard_normal((5, 3))


@pytest.mark.parametrize(
    "dtype,exp", [(np.float64, 300), (np.float64, -300), (np.float32, 40), (np.float32, -40)]
)
@pytest.mark.parametrize("fn", ["first", "both", "fc3"])
def test_kernels_homogeneous_at_extreme_scales(dtype, exp, fn):
    """H(cX) = c^2 H(X) for c a power of two (exact scaling), or a ValueError; never NaN."""
    X = _x_unit().astype(dtype)
    c = 2.0**exp

    def K(A):
        if fn == "fc3":
            return fc_relu_kernels(A, depth=3)[0].astype(np.float64)
        return two_layer_ntk(A, layers=fn).astype(np.float64)

    K0 = K(X)
    # |x| <= 3 here, so every kernel value, q(x) and diagonal is within 2^(2 |exp| + 6) of 1:
    # inside the dtype's normal range (2^+-126 in float32, 2^+-1022 in float64): no ValueError.
    K1 = K((X.astype(np.float64) * c).astype(dtype))
    assert np.isfinite(K1).all()
    eps = EPS[np.dtype(dtype)]
    scale = np.outer(np.sqrt(np.diag(K0)), np.sqrt(np.diag(K0)))
    assert np.all(np.abs(K1 / c**2 - K0) <= 8 * math.sqrt(eps) * scale)


@pytest.mark.parametrize(
    "kw", [{"b_std": 1e77}, {"w_std": 1e80}, {"w_out": 1e160}, {"kappa": 1e160}]
)
def test_kernel_extreme_hyperparameters(kw):
    """Representable kernels are computed correctly; beyond max / 4 a ValueError says so.

    The decision comes from the float64 reference: the diagonal (theta = 0) bounds every entry,
    so the kernel is representable iff the reference diagonal and q(x) stay below max / 4.
    """
    X = _x_unit()
    lim = np.finfo(np.float64).max / 4
    with np.errstate(over="ignore", invalid="ignore"):
        if "kappa" in kw:
            ref, scale = ref_two_layer(X, X, "both", np.float64(kw["kappa"]))
            refs, scales = [ref], [scale]
            fits = bool(np.isfinite(scale).all() and scale.max() <= lim)
        else:
            p = {"w": kw.get("w_std", 2**0.5), "b": kw.get("b_std", 0.0)}
            p["w_out"] = kw.get("w_out", 1.0)
            p = {key: np.float64(v) for key, v in p.items()}  # inf, not OverflowError
            r_ntk, r_nngp, dx, _ = ref_fc(X, X, 2, **p)
            refs, scales = [r_ntk, r_nngp], [np.outer(np.sqrt(dx), np.sqrt(dx))] * 2
            fits = bool(np.isfinite(dx).all() and dx.max() <= lim)
    if not fits:
        with pytest.raises(ValueError, match="kernel values overflow the dtype range"):
            if "kappa" in kw:
                two_layer_ntk(X, layers="both", **kw)
            else:
                fc_relu_kernels(X, depth=2, **kw)
        return
    out = [two_layer_ntk(X, layers="both", **kw)] if "kappa" in kw else []
    if not out:
        out = list(fc_relu_kernels(X, depth=2, **kw))
    eps = EPS[np.dtype(np.float64)]
    for K, ref, scale in zip(out, refs, scales):
        assert np.isfinite(K).all()
        assert np.all(np.abs(K - ref) <= 16 * math.sqrt(eps) * scale)


@pytest.mark.parametrize(
    "value,d,tile", [(-0.82386917, 5, None), (-0.82386917, 5, 1), (1.5226130653266332, 7, 1)]
)
def test_duplicate_rows_psd_to_round_off(value, d, tile):
    X = np.full((5, d), value, dtype=np.float32)
    K = two_layer_ntk(X, tile=tile).astype(np.float64)
    lmin = float(np.linalg.eigvalsh(K).min())
    assert abs(lmin) <= 16 * 5 * EPS[np.dtype(np.float32)] * np.abs(K).max(), lmin


@pytest.mark.parametrize("dtype,value", [(np.float64, 1e200), (np.float32, 1e25)])
def test_kernel_of_unrepresentable_size_raises(dtype, value):
    X = (_x_unit() * value).astype(dtype)
    # H(x, x) = |x|^2 / 2 ~ value^2 (1e400, 1e50) is beyond the dtype's maximum (1.8e308, 3.4e38)
    assert 2 * math.log(np.linalg.norm(_x_unit(), axis=1).max() * value) - math.log(2) > math.log(
        np.finfo(dtype).max
    )
    with pytest.raises(ValueError, match="kernel values overflow the dtype range"):
        two_layer_ntk(X)


@pytest.mark.parametrize("kind", ["gaussian", "srht"])
@pytest.mark.parametrize(
    "value,dtype", [(1e308, np.float64), (1e-310, np.float64), (1e-30, np.float32)]
)
def test_sketch_renormalize_extreme_rows(kind, value, dtype):
    X = (value * np.array([[1.0, 0.5, 0.25, 0.125], [-1.0, 0.75, 0.375, -0.625]])).astype(dtype)
    Y = make_sketch(kind, 4, 2, seed=0, renormalize=True)(X)  # no row sketches to zero
    assert Y.dtype == dtype and np.isfinite(Y).all()
    np.testing.assert_allclose(np.linalg.norm(Y.astype(np.float64), axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "kind,d,k,signs",
    [
        ("gaussian", 8, 1, [-1, -1, -1, -1, -1, 1, -1, -1]),
        ("srht", 8, 1, [-1, -1, 1, 1, -1, 1, -1, 1]),
    ],
)
def test_sketch_no_nan_near_float32_max(kind, d, k, signs):
    """Rows of +-max/2: the sketch is computed where representable, else a ValueError, never NaN.

    The outcome is decided from the float64 product with the explicit matrix: float32 rounding
    moves the result by at most (d + 1) u sum_j |x_j S_ij| (u = eps / 2); beyond that margin
    on either side of the float32 maximum the answer is determined.
    """
    X = np.asarray([signs], dtype=np.float32) * np.float32(np.finfo(np.float32).max / 2)
    S = make_sketch(kind, d, k, seed=0)
    M = S.matrix().numpy()
    exact = X.astype(np.float64) @ M.T
    margin = (d + 1) * EPS[np.dtype(np.float32)] / 2 * (np.abs(X.astype(np.float64)) @ np.abs(M).T)
    fmax = float(np.finfo(np.float32).max)
    over = np.abs(exact) - margin > fmax
    assert over.any() or (np.abs(exact) + margin < fmax).all(), "construction: not at the edge"
    if over.any():
        with pytest.raises(ValueError, match=rf"the {kind}-sketched X overflows float32"):
            S(X)
    else:
        Y = S(X)
        assert Y.dtype == np.float32 and np.isfinite(Y).all()
        assert np.all(np.abs(Y - exact) <= margin)


@pytest.mark.parametrize("case", ["nan", "inf"])
def test_kernel_ridge_fit_overflow_raises(case):
    if case == "nan":
        H, y = two_layer_ntk(_x_unit()) * 1e-300, np.ones(5) * 1e300
    else:
        H, y = np.array([[5.877472e-39]], dtype=np.float32), np.array([2.0])
    # alpha = H^-1 y ~ 1e600 (nan case) or 2 / 2^-127 = 2^128 > float32 max (inf case): the
    # solution is not representable in H's dtype, so the documented ValueError must come
    with pytest.raises(ValueError, match=r"the solution alpha = \(H \+ ridge I\)\^-1 y overflows"):
        regression.kernel_ridge_fit(H, y)


def test_lambda_min_near_float64_max():
    """lambda_min = 0 is representable although lambda_max = 2 M is not: no ValueError."""
    M = np.finfo(np.float64).max / 1.1
    H = np.array([[M, M], [M, M]])
    lmin = theory.lambda_min(H, warn=False)
    # a backward-stable eigensolver: |error| <= c n eps ||H||_2 = c 2 eps (2 M), c = 4
    assert abs(lmin) <= 4 * 2 * EPS[np.dtype(np.float64)] * 2 * M


@pytest.mark.filterwarnings("ignore:Casting complex values to real")
@pytest.mark.parametrize("fn", ["bound", "ridge_fit"])
def test_complex_labels_rejected(fn):
    H = two_layer_ntk(_x_unit())
    y = np.ones(5) + 1j
    f = theory.generalization_bound if fn == "bound" else regression.kernel_ridge_fit
    with pytest.raises(ValueError, match="real"):
        f(H, y)


@pytest.mark.parametrize("fn", ["bound", "ridge_fit"])
def test_empty_output_labels_rejected(fn):
    H = two_layer_ntk(_x_unit())
    f = theory.generalization_bound if fn == "bound" else regression.kernel_ridge_fit
    with pytest.raises(ValueError, match="empty"):
        f(H, np.ones((5, 0)))
