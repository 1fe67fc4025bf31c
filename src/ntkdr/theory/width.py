"""Width requirements of the prior analysis (Du et al. 2019 Thm 4.1; Arora et al. 2019 Thm 4.1) and the Johnson-Lindenstrauss minimum dimension.

**Constants.** The theorems are stated with ``O(.)`` / ``Omega(.)``; every hidden constant is set
to 1 here.  The numbers are orders of magnitude that show how the requirements scale with
``n``, ``lambda_0``, ``delta``, ``eps``; they are not certified thresholds.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

from ntkdr.theory.bounds import _check_delta
from ntkdr.theory.spectra import _DUPLICATE_HINT
from ntkdr.validation import check_int, check_real

__all__ = ["width_requirements", "jl_min_dim", "CONSTANTS_NOTE"]

CONSTANTS_NOTE = (
    "all constants hidden in O(.) / Omega(.) are set to 1: these are orders of magnitude "
    "showing how the requirements scale, not certified thresholds"
)


# --------------------------------------------------------------------------------------------
# width requirements (Du et al. 2019 Thm 4.1; Arora et al. 2019 Thm 4.1)
# --------------------------------------------------------------------------------------------
def _exp_or_inf(log_value: float) -> float:
    try:
        return math.exp(log_value)
    except OverflowError:  # beyond the float64 range (log > ~709.78)
        return math.inf


def width_requirements(
    lambda0: float,
    n: int,
    delta: float = 0.05,
    eps: float = 0.1,
    kappa: float | None = None,
) -> dict[str, Any]:
    """Widths and step sizes the prior analysis asks for; **all O(.) constants set to 1**.

    Du et al. (ICLR 2019) Thm 4.1: ``m >= n^6 / (lambda0^4 delta^3)``, ``lr <= lambda0 / n^2``;
    then ``||u(t) - y||^2 <= (1 - lr lambda0 / 2)^t ||u(0) - y||^2``.

    Arora et al. (ICML 2019) Thm 4.1: ``kappa = eps delta / sqrt(n)`` (if not given),
    ``m >= n^7 / (lambda0^4 kappa^2 delta^4 eps^2)``, ``lr <= lambda0 / n^2``; then the residual
    follows the predicted trajectory within ``eps``.

    Returned keys (all ``float``; widths can be astronomically large and become ``inf`` past the
    float64 range, their ``*_log10`` stays finite): ``du_width``, ``du_width_log10``, ``du_lr``,
    ``du_rate`` (per-step factor ``1 - du_lr * lambda0 / 2`` of the squared residual),
    ``arora_kappa``, ``arora_width``, ``arora_width_log10``, ``arora_lr``, the inputs
    ``lambda0``, ``n``, ``delta``, ``eps``, and ``note`` (a string; says that constants are 1,
    and why widths are infinite when ``lambda0 <= 0``).  ``lambda0 <= 0`` (e.g. duplicate or
    parallel inputs) is not an error: widths are ``inf``, step sizes 0, rate 1.
    """
    if (
        isinstance(lambda0, bool)
        or not isinstance(lambda0, Real)
        or not math.isfinite(float(lambda0))
    ):
        raise ValueError(f"lambda0 must be a finite number, got {lambda0!r}")
    lambda0 = float(lambda0)
    n = check_int(n, "n", min_value=1)
    delta = _check_delta(delta)
    eps = check_real(eps, "eps", positive=True)
    if kappa is None:
        kappa = eps * delta / math.sqrt(n)
    else:
        kappa = check_real(kappa, "kappa", positive=True)
    note = CONSTANTS_NOTE
    if lambda0 > 0:
        ln_n, ln_l, ln_d = math.log(n), math.log(lambda0), math.log(delta)
        du_log = 6 * ln_n - 4 * ln_l - 3 * ln_d
        ar_log = 7 * ln_n - 4 * ln_l - 2 * math.log(kappa) - 4 * ln_d - 2 * math.log(eps)
        du_width, ar_width = _exp_or_inf(du_log), _exp_or_inf(ar_log)
        du_w10, ar_w10 = du_log / math.log(10), ar_log / math.log(10)
        lr = lambda0 / n**2
        rate = 1.0 - lr * lambda0 / 2
    else:
        du_width = ar_width = du_w10 = ar_w10 = math.inf
        lr, rate = 0.0, 1.0
        note = (
            f"{note}; lambda0 = {lambda0:.3e} <= 0, so no finite width or positive step size "
            f"satisfies the theorems ({_DUPLICATE_HINT})"
        )
    return {
        "lambda0": lambda0,
        "n": float(n),
        "delta": delta,
        "eps": eps,
        "du_width": du_width,
        "du_width_log10": du_w10,
        "du_lr": lr,
        "du_rate": rate,
        "arora_kappa": kappa,
        "arora_width": ar_width,
        "arora_width_log10": ar_w10,
        "arora_lr": lr,
        "note": note,
    }


# --------------------------------------------------------------------------------------------
# Johnson-Lindenstrauss
# --------------------------------------------------------------------------------------------
def jl_min_dim(n: int, eps: float) -> int:
    """Smallest ``k`` with ``k >= 4 ln n / (eps^2 / 2 - eps^3 / 3)`` (Dasgupta & Gupta), ``0 < eps < 1``.

    Rounded up (scikit-learn's ``johnson_lindenstrauss_min_dim`` rounds down).  ``n = 1``
    (``ln 1 = 0``, nothing to preserve) returns 1, the smallest meaningful dimension.
    """
    n = check_int(n, "n", min_value=1)
    eps = check_real(eps, "eps")
    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    if n == 1:
        return 1
    return max(1, math.ceil(4 * math.log(n) / (eps**2 / 2 - eps**3 / 3)))
