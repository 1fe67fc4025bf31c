"""``ntkdr kernel`` with the activations beyond ReLU: the file equals ``fc_kernels`` on the same
rows, and misuse of the new options is one line, exit 2."""

from __future__ import annotations

import numpy as np
import pytest

from ntkdr.cli import main
from ntkdr.data import load_dataset, normalize_rows
from ntkdr.kernels import fc_kernels

TINY = ["--dataset", "digits", "--n-train", "30", "--n-test", "10", "--quiet"]


def _rows() -> np.ndarray:
    ds = load_dataset("digits", n_train=30, n_test=10, seed=0)
    return normalize_rows(np.concatenate([ds.X_train, ds.X_test]))


@pytest.mark.parametrize(
    ("flags", "kwargs"),
    [
        (["--activation", "erf", "--b-std", "0.1"], {"activation": "erf", "b_std": 0.1}),
        (
            ["--activation", "leaky_relu", "--act-param", "alpha=0.2", "--w-std", "1.3"],
            {"activation": "leaky_relu", "alpha": 0.2, "w_std": 1.3},
        ),
        (
            [
                "--activation",
                "abrelu",
                "--act-param",
                "a=-0.5",
                "--act-param",
                "b=2",
                "--which",
                "nngp",
            ],
            {"activation": "abrelu", "a": -0.5, "b": 2.0},
        ),
        (["--activation", "gelu", "--w-out", "0.7"], {"activation": "gelu", "w_out": 0.7}),
    ],
)
def test_kernel_file_equals_fc_kernels(flags, kwargs, tmp_path):
    out = tmp_path / "k.npy"
    assert main(["kernel", *TINY, "--depth", "3", *flags, "--out", str(out)]) == 0
    ntk, nngp = fc_kernels(_rows(), depth=3, **kwargs)
    want = nngp if "nngp" in flags else ntk
    # the file and the direct call run the same tiled plan on the same float64 rows; the tile
    # shapes may differ, so allow a few ulps of the largest entry rather than bitwise equality
    got = np.load(out)
    assert got.shape == (40, 40)
    np.testing.assert_allclose(
        got, want, rtol=0, atol=64 * np.finfo(np.float64).eps * np.abs(want).max()
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--activation", "erf"],
            "ntkdr: error: --activation needs --depth (the default two-layer kernel H1 is ReLU)",
        ),
        (
            ["--b-std", "0.1"],
            "ntkdr: error: --b-std needs --depth (the default two-layer kernel H1 is ReLU)",
        ),
        (
            ["--depth", "2", "--activation", "erf", "--act-param", "q=1"],
            "ntkdr: error: unexpected parameter(s) 'q' for activation 'erf'; allowed: 'a', 'b', 'c'",
        ),
        (
            ["--depth", "2", "--act-param", "alpha"],
            "ntkdr: error: kernel: argument --act-param: expected NAME=VALUE (e.g. alpha=0.2), got 'alpha'",
        ),
        (
            ["--depth", "2", "--activation", "tanh"],
            "ntkdr: error: kernel: argument --activation: invalid choice: 'tanh'",
        ),
    ],
)
def test_bad_activation_options(flags, message, tmp_path, capsys):
    assert main(["kernel", *TINY, *flags, "--out", str(tmp_path / "k.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(message), err


def test_cli_activation_choices_match_the_library():
    from ntkdr.cli.parser import ACTIVATION_CHOICES
    from ntkdr.kernels import ACTIVATIONS

    assert ACTIVATION_CHOICES == ACTIVATIONS
