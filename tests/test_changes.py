"""The deliberate behaviour changes of the restructure (CHANGELOG, "Unreleased"): one byte-size
parser, the cost model taken from the sketch object, the new names with deprecated aliases, and
the scikit-learn sketch transformer."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

import ntkdr
from ntkdr.cli.parser import build_parser
from ntkdr.memory import DEFAULT_MAX_MEMORY, check_max_memory, parse_bytes
from ntkdr.sketches import SKETCH_KINDS, SketchTransformer, make_sketch
from ntkdr.theory import cost


# ----------------------------------------------------------------------------- byte sizes
@pytest.mark.parametrize(
    "text, nbytes",
    [
        ("2GB", 2 * 10**9),
        ("2GiB", 2**31),
        ("512MB", 512 * 10**6),
        ("512MiB", 512 * 2**20),
        ("1.5GiB", int(1.5 * 2**30)),
        ("4096", 4096),
        ("4096B", 4096),
        (" 1kb ", 1000),
        ("1KiB", 1024),
    ],
)
def test_one_parser_standard_prefixes(text, nbytes):
    assert parse_bytes(text) == nbytes
    assert check_max_memory(text) == nbytes


@pytest.mark.parametrize("bad", ["lots", "2 G B", "512M", "-1GB", "0", "inf", "nanGB", "", True])
def test_parser_refuses_anything_else_in_one_line(bad):
    with pytest.raises(ValueError, match="max_memory") as err:
        parse_bytes(bad)
    assert "\n" not in str(err.value)


def test_none_is_no_cap_and_numbers_pass_through():
    assert check_max_memory(None) is None
    assert check_max_memory(3000) == 3000 and check_max_memory(40.5) == 40.5
    assert DEFAULT_MAX_MEMORY == 256 * 2**20


def test_cli_reads_2GB_as_decimal_gigabytes():
    args = build_parser().parse_args(["kernel", "--out", "k.npy", "--max-memory", "2GB"])
    assert args.max_memory == 2 * 10**9  # was 2**31 before the restructure
    args = build_parser().parse_args(["kernel", "--out", "k.npy", "--max-memory", "2GiB"])
    assert args.max_memory == 2**31


# ----------------------------------------------------------------------------- cost model
@pytest.mark.parametrize("kind", SKETCH_KINDS)
def test_cost_model_is_the_sketch_own_count(kind):
    d, m, k = 40, 16, (40 if kind == "identity" else 6)
    S = make_sketch(kind, d, k, seed=3)
    c = cost(d, m, k, kind, n=5, seed=3)
    assert c["factorized"]["sketch_macs_per_example"] == S.flops(1)
    assert c["factorized"]["sketch_macs_once"] == S.flops(5)
    assert c["factorized"]["params_fixed"] == m + S.stored_size
    assert cost(d, m, sketch=S, n=5) == c


def test_cost_model_changes_for_srht_and_sparse():
    S = make_sketch("srht", 784, 64, seed=0)
    c = cost(784, 256, 64, "srht")
    assert c["factorized"]["sketch_macs_per_example"] == S.flops(1)
    assert c["factorized"]["sketch_macs_per_example"] != 1024 * 10 + 64  # the old d' log2 d' + k
    sp = cost(784, 256, 64, "sparse")
    assert sp["s"] == 8 == make_sketch("sparse", 784, 64).s  # the sketch's default, not 1
    with pytest.raises(ValueError, match="differs from the sketch"):
        cost(784, 256, 32, sketch=S)


# ----------------------------------------------------------------------------- names
def test_new_names_and_deprecated_aliases():
    from ntkdr.kernels import AnalyticNTK
    from ntkdr.nets.empirical import empirical_ntk

    assert ntkdr.AnalyticNTK is AnalyticNTK and ntkdr.empirical_ntk is empirical_ntk
    assert ntkdr.train_network is ntkdr.fit and ntkdr.cost_model is ntkdr.cost
    with pytest.warns(DeprecationWarning, match=r"ntkdr\.ntk is deprecated.*ntkdr\.empirical_ntk"):
        assert ntkdr.ntk is empirical_ntk
    with pytest.warns(DeprecationWarning, match=r"ntkdr\.NTK is deprecated.*ntkdr\.AnalyticNTK"):
        assert ntkdr.NTK is AnalyticNTK
    with warnings.catch_warnings():  # the module-level names stay plain aliases
        warnings.simplefilter("error")
        from ntkdr.empirical import ntk
        from ntkdr.kernels import NTK

        assert ntk is empirical_ntk and NTK is AnalyticNTK


# ----------------------------------------------------------------------------- transformer
@parametrize_with_checks([SketchTransformer(), SketchTransformer("srht", 2, random_state=0)])
def test_sketch_transformer_passes_check_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize("kind", ["gaussian", "sparse", "srht", "pca"])
def test_sketch_transformer_in_a_pipeline(kind):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 20))
    y = X[:, 0] - 2 * X[:, 1]
    tr = SketchTransformer(kind, 8, random_state=4).fit(X)
    S = make_sketch(kind, 20, 8, seed=4).fit(X)
    np.testing.assert_allclose(tr.transform(X), S(X), rtol=1e-12, atol=1e-12)
    assert tr.get_feature_names_out().tolist() == [f"sketchtransformer{i}" for i in range(8)]
    pipe = make_pipeline(SketchTransformer(kind, 8, random_state=4), Ridge(alpha=1e-3)).fit(X, y)
    assert pipe.predict(X).shape == (60,)
    with pytest.raises(ValueError, match="k must be <= d"):
        SketchTransformer(kind, 21).fit(X)


# ----------------------------------------------------------------------------- one budget
def test_kernel_files_pass_their_budget_to_the_kernel(tmp_path):
    from dataclasses import dataclass

    from ntkdr.kernels import AnalyticNTK, two_layer_ntk
    from ntkdr.kernels.tiles import compute_kernel_to_file

    seen = []

    @dataclass
    class Spy(AnalyticNTK):
        def __call__(self, X, Z=None, *, out=None):
            seen.append(self.options.max_memory)
            return super().__call__(X, Z, out=out)

    X = np.random.default_rng(1).standard_normal((300, 5))
    path = compute_kernel_to_file(X, tmp_path / "K.npy", Spy(), max_memory="8MiB")
    assert seen and set(seen) == {8 * 2**20}  # the tile budget reaches the kernel's options
    np.testing.assert_allclose(np.load(path), two_layer_ntk(X), rtol=0, atol=1e-12)
