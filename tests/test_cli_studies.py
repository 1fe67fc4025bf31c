"""`ntkdr compare` and `ntkdr width` end to end (one-line errors, files written); the width
section that `ntkdr run` adds to its report is checked in test_cli's run --quick test."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from ntkdr.cli import main


def strict(text: str):
    def bad(name):
        raise ValueError(f"non-JSON constant {name}")

    return json.loads(text, parse_constant=bad)


@pytest.fixture
def factory(tmp_path, monkeypatch):
    (tmp_path / "fz_user_models.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            def mlp(d):
                torch.manual_seed(0)
                return nn.Sequential(nn.Linear(d, 48), nn.ReLU(), nn.Linear(48, 1))

            def two_outputs():
                return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2))

            def not_a_module():
                return 3

            def broken():
                raise RuntimeError("no weights here")

            def wrong_width():
                return nn.Sequential(nn.Linear(10, 4), nn.ReLU(), nn.Linear(4, 1))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "fz_user_models"
    sys.modules.pop("fz_user_models", None)


def test_compare_prints_and_writes_json(factory, tmp_path, capsys):
    out = tmp_path / "c.json"
    code = main(["compare", "--model", f"{factory}:mlp", "--dataset", "digits", "--k", "16",
                 "--n", "40", "--json", str(out)])  # fmt: skip
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "lambda_min" in stdout and "kernel alignment" in stdout and "trace_axes" in stdout
    res = strict(out.read_text())
    c = res["comparison"]
    assert c["n"] == 40 and c["method_a"] == "jacobian" and 0 < c["alignment"] <= 1
    assert "bound_ratio" in c and c["params_b"] < c["params_a"]
    assert [r["name"] for r in res["factorization"]["layers"]] == ["0", "2"]


def test_compare_data_file_without_labels(factory, tmp_path, capsys):
    import numpy as np

    path = tmp_path / "rows.npz"
    np.savez(path, X=np.random.default_rng(0).normal(size=(30, 64)))
    out = tmp_path / "c.json"
    code = main(["compare", "--model", f"{factory}:mlp", "--data", str(path), "--k", "16",
                 "--json", str(out), "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    c = strict(out.read_text())["comparison"]
    assert c["n"] == 30 and "bound_ratio" not in c


def test_compare_multi_output_and_fraction(factory, capsys):
    code = main(["compare", "--model", f"{factory}:two_outputs", "--dataset", "digits",
                 "--k", "0.5", "--kind", "srht", "--n", "24", "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize(
    "model, k, message",
    [
        ("fz_user_models", "16", "--model must be package.module:function"),
        ("fz_user_models:nope", "16", "has no attribute 'nope'"),
        ("no_such_module_xyz:f", "16", "cannot import 'no_such_module_xyz'"),
        ("fz_user_models:not_a_module", "16", "must return a torch.nn.Module, got int"),
        ("fz_user_models:broken", "16", "the factory raised RuntimeError: no weights here"),
        ("fz_user_models:wrong_width", "2", "--model failed on the data (20 x 64)"),
        ("fz_user_models:mlp", "0", "k must be >= 1"),
        ("fz_user_models:mlp", "1.5", r"fractional k must be in (0, 1]"),
        ("fz_user_models:mlp", "abc", "expected an integer k or a fraction"),
        ("fz_user_models:mlp", "100", "no layer selected"),
    ],
)
def test_compare_bad_input_is_one_line(factory, capsys, model, k, message):
    code = main(["compare", "--model", model, "--dataset", "digits", "--k", k, "--n", "20"])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and message in err, err


def test_width_writes_json_markdown_and_plots(tmp_path, capsys):
    out = tmp_path / "w"
    code = main(["width", "--dataset", "digits", "--widths", "16,64", "--seeds", "1",
                 "--steps", "3", "--n-max", "24", "--k", "8", "--output", str(out),
                 "--networks", "two_layer_dense,two_layer_factorized"])  # fmt: skip
    stdout, err = capsys.readouterr()
    assert code == 0, err
    study = strict((out / "width.json").read_text())
    assert set(study["networks"]) == {"two_layer_dense", "two_layer_factorized"}
    assert study["config"]["data"] == "digits" and study["config"]["widths"] == [16, 64]
    for name in ("width_deviation.png", "width_cost.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "width.md").read_text()
    assert "How wide is wide enough" in md and "width_deviation.png" in md
    assert "two_layer_factorized" in stdout
    assert not list(out.glob(".*"))  # no temporary files left


def test_width_bad_input(tmp_path, capsys):
    code = main(["width", "--dataset", "digits", "--widths", "0", "--output", str(tmp_path / "w")])
    assert code == 2 and "width must be >= 1" in capsys.readouterr().err
    code = main(["width", "--dataset", "digits", "--networks", "wide", "--output", str(tmp_path)])
    assert code == 2 and "unknown network 'wide'" in capsys.readouterr().err
