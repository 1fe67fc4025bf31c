"""Width study on a tiny grid: the result's structure, deviations shrinking with m about like
m^(-1/2), the reach / extrapolation logic, costs, theory widths, plots, argument checks."""

import json
import math

import numpy as np
import pytest

from ntkdr.cli.width_plots import plot_width_study
from ntkdr.data import load_dataset
from ntkdr.studies.width import NETWORKS, mlp_cost, width_study


@pytest.fixture(scope="module")
def mnist():
    ds = load_dataset("mnist", n_train=40, n_test=10)
    return ds.X_train, ds.y_train


@pytest.fixture(scope="module")
def study(mnist):
    X, y = mnist
    return width_study(
        X, y, widths=(16, 64, 256), seeds=2, k=32, steps=5, n_max=20, time_steps=False
    )


def test_structure_and_json(study):
    d = study.as_dict()
    assert set(d["networks"]) == set(NETWORKS)
    assert d["config"]["n"] == 20 and d["config"]["widths"] == [16, 64, 256]
    for net in d["networks"].values():
        for metric in ("kernel_deviation", "trajectory_deviation", "weight_movement"):
            assert len(net["metrics"][metric]["mean"]) == 3
        assert 0 <= min(net["metrics"]["flip_fraction"]["mean"]) <= 1
        assert net["lambda0"] > 0 and net["lr"] > 0
    json.dumps(d)  # JSON-ready (nan / inf allowed as in the other reports)


def test_deviations_shrink_like_inverse_sqrt_width(study):
    for name, net in study.networks.items():
        kd = net["metrics"]["kernel_deviation"]["mean"]
        assert kd[-1] < kd[0], name
        wm = net["metrics"]["weight_movement"]["mean"]
        assert wm[-1] < wm[0], name
    slope = study.networks["two_layer_dense"]["fit"]["kernel_deviation"]["slope"]
    assert -0.85 < slope < -0.25


def test_reach_cost_and_theory(study):
    for name, net in study.networks.items():
        fit, reach = net["fit"]["kernel_deviation"], net["reach"]["kernel_deviation"]
        assert math.isclose(fit["m_fit"], (fit["c_half"] / 0.1) ** 2)
        hit = [
            m for m, v in zip(net["widths"], net["metrics"]["kernel_deviation"]["mean"]) if v <= 0.1
        ]
        assert reach["m_grid"] == (hit[0] if hit else None)
        assert net["cost"]["macs_per_step"] > 0
        assert net["theory"]["du_width_log10"] > math.log10(256), name  # far beyond the grid
    assert study.networks["two_layer_factorized"]["limit_gap"] > 0
    assert study.networks["two_layer_dense"]["limit_gap"] == 0
    a = study.networks["two_layer_dense"]["cost"]
    b = study.networks["two_layer_factorized"]["cost"]
    assert study.cost_ratio["two_layer"] == pytest.approx(b["macs_per_step"] / a["macs_per_step"])


def test_tolerance_extremes_and_subset(mnist):
    X, y = mnist
    easy = width_study(X, y, widths=(8, 32), seeds=1, k=16, steps=2, n_max=12,
                       networks=["two_layer_dense"], tolerance=10.0)  # fmt: skip
    net = easy.networks["two_layer_dense"]
    assert net["reach"]["kernel_deviation"]["m_grid"] == 8 and net["cost"]["seconds_per_step"] > 0
    hard = width_study(X, y, widths=(8, 32), seeds=1, k=16, steps=2, n_max=12,
                       networks=["two_layer_factorized"], tolerance=1e-4, time_steps=False)  # fmt: skip
    net = hard.networks["two_layer_factorized"]
    assert net["reach"]["kernel_deviation"]["m_grid"] is None
    assert net["cost"]["extrapolated"] and net["cost"]["m"] > 32
    assert hard.cost_ratio == {"two_layer": None, "deep": None}


def test_mlp_cost_by_hand():
    c = mlp_cost(10, [4, 3], n=2)
    mats = 10 * 4 + 4 * 3 + 3 * 1
    assert c["params"] == mats + 4 + 3 + 1
    assert c["train_macs_per_step"] == 2 * 2 * mats + 2 * (4 * 3 + 3) + c["params"]
    f = mlp_cost(10, [4, 3], n=2, k=5)
    assert f["sketch_macs_once"] == 2 * 5 * 10 and f["params"] == c["params"] - 5 * 4


def test_plots(study, tmp_path):
    paths = plot_width_study(study.as_dict(), tmp_path)
    for p in paths:
        with open(p, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"widths": ()}, "widths is empty"),
        ({"widths": (0,)}, "width must be >= 1"),
        ({"networks": ["wide"]}, "unknown network"),
        ({"k": 10_000}, "k must be <= 784"),
        ({"tolerance": 0}, "tolerance must be > 0"),
        ({"seeds": 0}, "seeds must be >= 1"),
    ],
)
def test_errors(mnist, kwargs, match):
    X, y = mnist
    with pytest.raises(ValueError, match=match):
        width_study(X, y, **kwargs)


def test_mismatched_labels(mnist):
    X, y = mnist
    with pytest.raises(ValueError, match="different numbers of samples"):
        width_study(X, np.ones(3))
