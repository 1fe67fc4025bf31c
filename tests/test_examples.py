"""The README's API example runs and prints what it promises."""

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dense_vs_factorized.py"


def test_dense_vs_factorized_example_runs():
    res = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("lambda_min: dense") and "sketched" in lines[0]
    assert any(line.strip().startswith("dense:") for line in lines)
    assert any("srht k=64" in line for line in lines)
    assert "multiply-adds per step" in lines[-1]
