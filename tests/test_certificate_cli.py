"""``ntkdr certify`` / ``run`` with the certificate engine: method choice shown by --verbose, the
report's certificate section, a budget too small (exit 2, one line), --resume after an
interruption giving the same JSON (timings aside)."""

from __future__ import annotations

import json

import pytest

from ntkdr.cli import main

TINY = ["--dataset", "mnist", "--n-train", "150", "--n-test", "60", "--ks", "16,32", "--seeds", "2"]


def _strip_times(obj):
    if isinstance(obj, dict):
        return {
            k: _strip_times(v)
            for k, v in obj.items()
            if k not in ("seconds", "wall_seconds", "timings", "environment")
        }
    if isinstance(obj, list):
        return [_strip_times(v) for v in obj]
    return obj


def test_verbose_names_the_method_and_json_has_intervals(tmp_path, capsys):
    out = tmp_path / "e.json"
    args = ["certify", *TINY, "--kinds", "gaussian", "--output", str(out), "--verbose", "--quiet"]
    assert main(args) == 0
    rep = json.loads(out.read_text())
    assert rep["certificate"]["method"] == "exact" and "assumptions" in rep["certificate"]
    lam = rep["dense"]["certificate"]["lambda_min"]
    assert lam["status"] == "certified" and lam["lower"] <= lam["value"] <= lam["upper"]
    assert len(rep["sketched"][0]["certificate"]) == 2
    assert not (tmp_path / "e.json.parts").exists()
    err = capsys.readouterr().err
    assert "certificate: exact for n = 150" in err and "gaussian-k16-s1" in err


def test_budget_too_small_is_one_line(capsys):
    assert main(["certify", *TINY, "--max-memory", "10KB", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ntkdr: error: the certificate for n = 150 needs") and "\n" not in err


def test_resume_needs_output(capsys):
    assert main(["certify", *TINY, "--resume", "--quiet"]) == 2
    assert "--resume needs --output" in capsys.readouterr().err


def test_interrupted_certify_resumes_to_the_same_json(tmp_path, monkeypatch):
    from ntkdr.experiment import certify as G

    full = tmp_path / "full.json"
    assert (
        main(["certify", *TINY, "--kinds", "gaussian,srht", "--output", str(full), "--quiet"]) == 0
    )
    real = G.certify_features
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    out = tmp_path / "e.json"
    args = ["certify", *TINY, "--kinds", "gaussian,srht", "--output", str(out), "--quiet"]
    monkeypatch.setattr(G, "certify_features", flaky)
    assert main(args) == 130  # interrupted: 3 configurations on disk
    assert len(list((tmp_path / "e.json.parts").glob("*-s*.json"))) + 1 >= 3
    monkeypatch.setattr(G, "certify_features", real)
    assert main([*args, "--resume"]) == 0
    a, b = json.loads(full.read_text()), json.loads(out.read_text())
    a["config"].pop("parts_dir", None), b["config"].pop("parts_dir", None)
    assert _strip_times(a) == _strip_times(b)


def test_run_report_states_the_method(tmp_path):
    method = "cholesky-inplace"  # the in-memory methods are exercised by certify above
    args = ["run", *TINY, "--sketches", "srht", "--ks", "16", "--width", "16", "--steps", "1"]
    assert main([*args, "--method", method, "--output", str(tmp_path), "--quiet"]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "## Certificate" in md and f"Method **{method}**" in md and "certified" in md


@pytest.mark.slow
def test_torchrun_certify_matches_one_process(tmp_path):
    import os
    import subprocess
    import sys

    from _spawn import run_torchrun

    common = ["--dataset", "mnist", "--n-train", "300", "--n-test", "100", "--kinds", "srht"]
    common += ["--ks", "32", "--seeds", "1", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    two = tmp_path / "two.json"
    done = run_torchrun(
        ["-m", "ntkdr", "certify", *common, "--output", two], nproc=2, env=env, timeout_s=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    one = tmp_path / "one.json"
    cmd = [sys.executable, "-m", "ntkdr", "certify", *common, "--output", one]
    subprocess.run([*map(str, cmd), "--method", "matrix-free"], env=env, check=True, timeout=600)
    a, b = json.loads(two.read_text()), json.loads(one.read_text())
    assert a["certificate"]["method"] == b["certificate"]["method"] == "matrix-free"
    for key in ("dense", "sketched", "recommended_k"):
        assert _strip_times(_drop_reasons(a[key])) == _strip_times(_drop_reasons(b[key]))


def _drop_reasons(obj):
    if isinstance(obj, dict):
        return {k: _drop_reasons(v) for k, v in obj.items() if k != "method_reason"}
    if isinstance(obj, list):
        return [_drop_reasons(v) for v in obj]
    return obj
