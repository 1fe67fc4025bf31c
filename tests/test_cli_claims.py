"""README claims about the command line, checked end to end through ``python -m ntkdr``.

* ``ntkdr train --out DIR --checkpoint-every N``, killed with SIGKILL mid-run and resumed with
  ``--resume``, ends with exactly the model of an uninterrupted run (bit for bit: same process
  count and threads, so the code guarantees it).
* ``ntkdr run --data FILE`` with more than two classes trains on one-hot targets and writes a
  valid report.
* ``--max-memory inf`` and ``--seeds 5000`` are refused with exit 2 and one line.
* What ``--dataset digits`` without ``--classes`` means.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from ntkdr.cli import main


def _env() -> dict:
    # one thread in every process: the bit-for-bit claim holds for the same thread count
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _no_constant(name):
    raise ValueError(f"report.json holds the non-JSON constant {name}")


TRAIN = [
    "train",
    "--dataset",
    "digits",
    "--classes",
    "3,5",
    "--width",
    "128",
    "--steps",
    "200",
    "--lr",
    "0.05",
    "--dtype",
    "float64",
    "--quiet",
    "--checkpoint-every",
    "5",
]
STEPS = 200


def _train(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ntkdr", *TRAIN, "--out", str(out), *extra],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_train_killed_with_sigkill_resumes_to_the_same_model(tmp_path):
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ntkdr", *TRAIN, "--out", str(killed)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not (killed / "checkpoint.pt").exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.005)
        time.sleep(0.1)  # a few more checkpoints: the kill may land during a checkpoint write
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "model.pt").exists(), "the run finished before it was killed"
    ckpt = torch.load(killed / "checkpoint.pt", weights_only=False)  # our own file
    assert 5 <= ckpt["step"] < STEPS, ckpt["step"]  # a real mid-run checkpoint

    resumed = _train(killed, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    plain = _train(ref)
    assert plain.returncode == 0, plain.stderr
    a = torch.load(killed / "model.pt", weights_only=True)
    b = torch.load(ref / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and a
    for k in b:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    ha = json.loads((killed / "history.json").read_text())
    hb = json.loads((ref / "history.json").read_text())
    assert len(hb["train_loss"]) == STEPS + 1 and ha["train_loss"] == hb["train_loss"]
    # and training did something: the weights moved from their initial values
    assert hb["train_loss"][-1] < 0.5 * hb["train_loss"][0]


def _h1(F):
    """H1 = (x . z)(pi - theta) / (2 pi) in plain numpy."""
    G = F @ F.T
    r = np.linalg.norm(F, axis=1)
    cos = np.clip(G / np.outer(r, r), -1.0, 1.0)
    return G * (np.pi - np.arccos(cos)) / (2 * np.pi)


def test_run_multiclass_data_file_uses_one_hot_targets(tmp_path, capsys):
    """A 3-class .npz: task multiclass, 3 network outputs trained on one-hot targets."""
    rng = np.random.default_rng(4)
    centers = rng.standard_normal((3, 12)) * 3
    labels = np.repeat([0, 1, 2], 40)
    X = centers[labels] + rng.standard_normal((120, 12))
    perm = rng.permutation(120)
    np.savez(tmp_path / "three.npz", X=X[perm], y=labels[perm] + 7)  # labels 7, 8, 9
    out = tmp_path / "rep"
    code = main(
        [
            "run",
            "--data",
            str(tmp_path / "three.npz"),
            "--quick",
            "--sketches",
            "gaussian",
            "--ks",
            "4",
            "--n-train",
            "90",
            "--n-test",
            "30",
            "--output",
            str(out),
            "--quiet",
        ]
    )
    _, err = capsys.readouterr()
    assert code == 0, err
    rep = json.loads((out / "report.json").read_text(), parse_constant=_no_constant)
    ds = rep["dataset"]
    assert ds["task"] == "multiclass" and ds["classes"] == [7, 8, 9]
    assert (ds["n_train"], ds["n_test"], ds["d"]) == (90, 30, 12)

    # One-hot targets: recompute the dense bound from the same split with Y = one-hot / sqrt(3)
    # (the report averages the per-class complexity), numpy / scipy only.
    from ntkdr.data import dataset_from_file

    split = dataset_from_file(tmp_path / "three.npz", n_train=90, n_test=30, seed=0)
    assert tuple(split.classes) == (7, 8, 9) and set(split.y_train) == {0, 1, 2}  # indices
    Y = np.eye(3)[split.y_train] / np.sqrt(3)
    H = _h1(split.X_train)
    comp = float((Y * scipy.linalg.cho_solve(scipy.linalg.cho_factor(H), Y)).sum())
    assert rep["dense"]["bound_true"] == pytest.approx(np.sqrt(2 * comp / 90), rel=1e-6)
    net = rep["dense"]["net"]
    assert net["loss"][-1] < net["loss"][0]
    assert 0 <= net["test_error"] <= 1 and len(net["loss"]) == rep["config"]["steps"] + 1
    assert (out / "report.md").stat().st_size > 0


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["kernel", "--dataset", "digits", "--max-memory", "inf", "--out", "k.npy"],
            "ntkdr: error: kernel: argument --max-memory: size must be > 0 and finite, got 'inf'",
        ),
        (
            ["run", "--dataset", "digits", "--quick", "--seeds", "5000"],
            "ntkdr: error: seeds must be <= 1000, got 5000",
        ),
        (
            ["certify", "--dataset", "digits", "--seeds", "5000"],
            "ntkdr: error: seeds must be <= 1000, got 5000",
        ),
    ],
)
def test_absurd_options_rejected_with_one_line(args, message, tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "ntkdr", *args],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert res.stderr.splitlines() == [message] and res.stdout == ""
    assert not list(tmp_path.iterdir()), "nothing is written for a refused request"


def test_named_dataset_without_classes_is_even_vs_odd(tmp_path, capsys):
    """``--dataset digits`` without ``--classes`` is the binary even-vs-odd task (labels +-1);
    the CLI has no way to ask a named data set for one-hot multiclass targets (only
    ``--data FILE`` with more than two labels gives that)."""
    out = tmp_path / "ev.json"
    code = main(
        ["certify", "--dataset", "digits", "--kinds", "gaussian", "--ks", "8"]
        + ["--seeds", "1", "--n-train", "60", "--n-test", "20", "--output", str(out), "--quiet"]
    )
    _, err = capsys.readouterr()
    assert code == 0, err
    ds = json.loads(out.read_text(), parse_constant=_no_constant)["dataset"]
    assert ds["task"] == "binary" and ds["d"] == 64
