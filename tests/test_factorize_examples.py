"""The factorization examples run and print what the README quotes."""

import re
import runpy
import warnings
from pathlib import Path

import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(name: str, capsys) -> list[str]:
    """Run an example in this process (torch is imported once), its RNG and warning filters
    contained."""
    with torch.random.fork_rng(), warnings.catch_warnings():
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr().out.splitlines()


def number(line: str) -> float:
    return float(re.findall(r"[-+]?\d*\.\d+|\d+", line)[-1])


def test_factorize_mlp_example(capsys):
    lines = run("factorize_mlp.py", capsys)
    acc = {
        key: number(next(l for l in lines if key in l)) for key in ("dense", "W S^+", "fine-tuned")
    }
    assert acc["dense"] > 0.8  # 10 classes, 1000 training images
    assert 0.1 < acc["W S^+"] < acc["dense"]  # projection keeps part of the function
    assert acc["fine-tuned"] > acc["W S^+"] + 0.1  # and fine-tuning U recovers most of it
    assert any(l.startswith("replaced 2, skipped 0") for l in lines)


def test_factorize_transformer_example(capsys):
    lines = run("factorize_transformer.py", capsys)
    assert sum("linear1" in l or "linear2" in l for l in lines) == 4
    assert any("jacobian / jacobian" in l for l in lines)
    ratio_line = next(l for l in lines if l.startswith("lambda_min:"))
    assert number(ratio_line) > 0
    align = next(l for l in lines if "alignment" in l)
    assert 0.5 < number(align) <= 1.0
