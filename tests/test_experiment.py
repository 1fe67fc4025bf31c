"""Pieces of the main job that the end-to-end CLI test cannot pin down exactly."""

import numpy as np
import pytest

from ntkdr.experiment import RunConfig, _recommend, _stats
from ntkdr.experiment.certify import task_error as _error


def _entry(kind, k, lam, bound):
    return {"kind": kind, "k": k, "lambda_min_ratio": {"mean": lam}, "bound_ratio": {"mean": bound}}


def test_recommend_smallest_k_within_tolerance_and_tie_break():
    entries = [
        _entry("gaussian", 64, 0.85, 1.05),  # lambda ratio outside 0.1
        _entry("gaussian", 256, 0.90, 1.06),
        _entry("srht", 256, 0.95, 1.04),  # same k, closer to 1 -> wins the tie
        _entry("pca", 32, 1.00, 1.30),  # bound ratio outside
    ]
    rec = _recommend({}, entries, 0.1)
    assert (rec["k"], rec["kind"]) == (256, "srht")
    assert rec["per_kind"] == {"gaussian": 256, "srht": 256, "pca": None}
    rec = _recommend({}, entries, 0.01)
    assert rec["k"] is None and rec["kind"] is None


def test_stats_ignores_non_finite_values_but_keeps_them_listed():
    s = _stats([1.0, 3.0, float("inf")])
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(np.sqrt(2.0)) and s["max"] == 3.0
    assert s["values"][2] == float("inf")


def test_error_by_task():
    Y = np.array([1.0, -1.0, 1.0, -1.0])
    assert _error(np.array([0.3, -2.0, -0.1, -0.5]), Y, "binary") == 0.25
    onehot = np.eye(3)[[0, 1, 2]]
    assert _error(np.eye(3)[[0, 2, 2]], onehot, "multiclass") == pytest.approx(1 / 3)
    assert _error(np.array([1.0, 2.0]), np.array([1.0, 0.0]), "regression") == 2.0


def test_config_validation_messages():
    with pytest.raises(ValueError, match="width must be >= 1"):
        RunConfig(width=0).validate()
    with pytest.raises(ValueError, match="unknown sketch kind 'fft'"):
        RunConfig(sketches=("fft",)).validate()
    with pytest.raises(ValueError, match="tolerance must be > 0"):
        RunConfig(tolerance=0.0).validate()
