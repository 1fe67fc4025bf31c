"""Hostile values for every numeric CLI option: each ends in exit 2 with one line naming the
problem, or is a valid value that runs and exits 0 -- never a traceback, an allocator error or a
job that runs for days.  Requests too large for the machine are refused before any allocation,
with the bytes needed and available; corrupt or mismatched checkpoints are named as such.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from ntkdr.cli import main
from ntkdr.validation import MAX_DEPTH, MAX_STEPS, available_memory, check_memory, format_bytes

HOSTILE = ["-1", "0", "nan", "inf", "1e30", "abc", "", "99999999999"]
TINY_DATA = ["--dataset", "digits", "--n-train", "30", "--n-test", "10", "--quiet"]

# command -> (base arguments, {option: extra arguments the option needs})
COMMANDS = {
    "run": (
        ["run", "--quick", "--width", "8", "--steps", "1", "--ks", "8", "--seeds", "1"]
        + ["--sketches", "gaussian"],
        {
            "--width": [],
            "--steps": [],
            "--seed": [],
            "--n-train": [],
            "--n-test": [],
            "--seeds": [],
            "--ks": [],
            "--tolerance": [],
        },
    ),
    "certify": (
        ["certify", "--ks", "8", "--seeds", "1", "--kinds", "gaussian"],
        {"--seed": [], "--n-train": [], "--n-test": [], "--eps": [], "--seeds": [], "--ks": []},
    ),
    "train": (
        ["train", "--width", "8", "--steps", "1"],
        {
            "--width": [],
            "--steps": [],
            "--lr": [],
            "--k": ["--sketch", "gaussian"],
            "--seed": [],
            "--n-train": [],
            "--n-test": [],
            "--checkpoint-every": [],
            "--batch-size": ["--optimizer", "sgd"],
        },
    ),
    "kernel": (
        ["kernel"],
        {
            "--k": ["--sketch", "gaussian"],
            "--seed": [],
            "--n-train": [],
            "--n-test": [],
            "--depth": [],
            "--tile": [],
            "--max-memory": [],
            "--w-std": ["--depth", "2", "--activation", "erf"],
            "--b-std": ["--depth", "2"],
            "--w-out": ["--depth", "2", "--activation", "gelu"],
        },
    ),
}

# Values that must be refused whatever the option: not a finite number.
ALWAYS_BAD = {"nan", "inf", "abc", ""}
# Absurd sizes that must be refused (too large for the data or the machine, or a documented cap).
HUGE_BAD = {
    "--width",
    "--steps",
    "--k",
    "--n-train",
    "--n-test",
    "--seeds",
    "--ks",
    "--depth",
    "--batch-size",
}
INTEGER_OPTIONS = HUGE_BAD | {"--seed", "--checkpoint-every", "--tile"}

CASES = [
    (cmd, opt, value)
    for cmd, (_, options) in COMMANDS.items()
    for opt in options
    for value in HOSTILE
]


def _argv(cmd: str, opt: str, value: str, tmp_path) -> list[str]:
    base, options = COMMANDS[cmd]
    argv = [*base, *options[opt], *TINY_DATA]
    if cmd == "run":
        argv += ["--output", str(tmp_path / "report")]
    elif cmd == "train":
        argv += ["--out", str(tmp_path / "train")]
    elif cmd == "kernel":
        argv += ["--out", str(tmp_path / "k.npy")]
    # later occurrences win in argparse: the hostile value overrides the tiny default
    return [*argv, f"{opt}={value}"]


@pytest.mark.parametrize(("cmd", "opt", "value"), CASES, ids=[f"{c}{o}={v}" for c, o, v in CASES])
def test_hostile_numeric_option(cmd, opt, value, tmp_path, capsys):
    code = main(_argv(cmd, opt, value, tmp_path))
    _, err = capsys.readouterr()
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err and "MemoryError" not in err
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ntkdr: error: "), err
    must_refuse = (
        value in ALWAYS_BAD
        or (value == "99999999999" and opt in HUGE_BAD)
        or (value == "1e30" and opt in INTEGER_OPTIONS)
        or value == "-1"
        or (value == "0" and opt in {"--width", "--k", "--seeds", "--ks", "--depth", "--tile"})
        or (value == "0" and opt in {"--n-train", "--checkpoint-every", "--batch-size"})
        or (value == "0" and opt in {"--lr", "--tolerance", "--eps", "--max-memory"})
        or (value == "0" and opt in {"--w-std", "--w-out"})
    )
    if must_refuse:
        assert code == 2, f"{cmd} {opt}={value!r} was accepted"


def test_absurd_width_is_refused_with_bytes_needed_and_available(tmp_path, capsys):
    for cmd, out in (("train", ["--out", str(tmp_path / "t")]), ("run", ["--quick"])):
        argv = [cmd, "--width", "99999999999", *TINY_DATA, *out]
        if cmd == "run":
            argv += ["--output", str(tmp_path / "r")]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert re.fullmatch(
            r"ntkdr: error: width m = 99999999999 \(a 99999999999 x 64 first layer.*\) needs "
            r"[0-9.e+]+ bytes \(.*iB\), but [0-9.e+]+ bytes \(.*\) are available on this "
            r"machine; use a smaller width",
            err,
        ), err


def test_depth_and_steps_caps_are_documented_values(tmp_path, capsys):
    assert (
        main(
            ["kernel", "--depth", str(MAX_DEPTH + 1), *TINY_DATA, "--out", str(tmp_path / "k.npy")]
        )
        == 2
    )
    assert (
        capsys.readouterr().err.strip()
        == f"ntkdr: error: --depth must be <= {MAX_DEPTH}, got {MAX_DEPTH + 1}"
    )
    assert (
        main(["train", "--steps", str(MAX_STEPS + 1), *TINY_DATA, "--out", str(tmp_path / "t")])
        == 2
    )
    assert (
        capsys.readouterr().err.strip()
        == f"ntkdr: error: --steps must be <= {MAX_STEPS}, got {MAX_STEPS + 1}"
    )


def test_library_refuses_absurd_models_before_allocating():
    from ntkdr.kernels import fc_relu_kernels
    from ntkdr.models import DeepReLU, TwoLayerReLU
    from ntkdr.train import fit

    with pytest.raises(
        ValueError, match=r"^width m = 10000000000 \(a 10000000000 x 784 first layer\) needs"
    ):
        TwoLayerReLU(784, 10**10)
    with pytest.raises(
        ValueError, match=r"^widths \[1000000, 1000000, 1000000\] .* needs .* are available"
    ):
        DeepReLU(784, 10**6, depth=3)
    with pytest.raises(ValueError, match=f"^depth must be <= {MAX_DEPTH}, got 99999999999$"):
        fc_relu_kernels(np.eye(3), depth=99999999999)
    with pytest.raises(ValueError, match=f"^depth must be <= {MAX_DEPTH}, got {MAX_DEPTH + 1}$"):
        DeepReLU(4, 2, depth=MAX_DEPTH + 1)
    X = np.eye(4)
    with pytest.raises(ValueError, match=f"^steps must be <= {MAX_STEPS}, got {MAX_STEPS + 1}$"):
        fit(TwoLayerReLU(4, 8), X, np.ones(4), MAX_STEPS + 1, progress=False)


def test_memory_check_and_byte_format():
    assert format_bytes(1536) == "1.54e+03 bytes (1.5 KiB)"
    assert format_bytes(3 * 2**40) == "3.3e+12 bytes (3 TiB)"
    avail = available_memory()
    assert avail > 0
    check_memory(1, "one byte", "unused")  # fits
    with pytest.raises(
        ValueError, match=r"^a test request needs .* are available on this machine; ask less$"
    ):
        check_memory(avail * 4 + 2**40, "a test request", "ask less")
