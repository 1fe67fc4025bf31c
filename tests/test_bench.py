"""Smoke tests of the benchmark runner (ntkdr.bench) at tiny sizes: structure, JSON, CLI.

No timing is asserted (the machine is shared): only that every case runs and yields a
finite positive ratio, and that the outputs are well formed.
"""

from __future__ import annotations

import json
import math

import pytest

from ntkdr.cli import bench

TINY = {
    "two_layer_ntk": {"n": 64, "d": 16},
    "deep_ntk": {"n": 64, "d": 16},
    "sketched_vs_dense_ntk": {"n": 64, "d": 128, "k": 16},
    "gd_step": {"n": 64, "d": 32, "m": 64, "k": 8},
    "fit_5": {"n": 64, "d": 32, "m": 64, "k": 8, "steps": 5},
    "fit_100": {"n": 64, "d": 32, "m": 64, "k": 8, "steps": 10},
    "fit_auto_lr": {"n": 64, "d": 32, "m": 64, "k": 8, "steps": 5},
    "inference": {"batch": 16, "d": 64, "m": 64, "k": 8},
    "empirical_closed": {"n": 32, "d": 16, "m": 64},
    "empirical_vs_torchfunc": {"n": 8, "d": 16, "m": 32},
    "empirical_vs_nt": {"n": 8, "d": 16, "m": 32},
    # large enough (16 MiB result) that the peak-RSS growth is not lost in allocator noise
    "tiled_memory": {"n": 2048, "d": 16},
}


@pytest.fixture(scope="module")
def results():
    return bench.run_benchmarks(repeats=2, warmup=1, sizes=TINY, progress=False)


def test_every_case_gives_a_finite_positive_ratio(results):
    assert [r["case"] for r in results] == list(bench.CASES)
    for r in results:
        assert r["error"] is None, r
        if r["skipped"]:  # only the optional peer may be missing
            assert r["case"] == "empirical_vs_nt" and "neural-tangents" in r["skipped"], r
            assert r["ratio"] is None and r["passed"] is None
            continue
        assert isinstance(r["ratio"], float) and math.isfinite(r["ratio"]) and r["ratio"] > 0, r
        assert r["sizes"] == {**bench.CASES[r["case"]].full, **TINY[r["case"]]}
        assert r["seconds"] and all(math.isfinite(v) and v > 0 for v in r["seconds"].values()), r
        assert (
            isinstance(r["ratio_min"], float)
            and math.isfinite(r["ratio_min"])
            and r["ratio_min"] > 0
        ), r
        for name, ts in r["samples"].items():
            assert r["seconds_min"][name] == min(ts) <= r["seconds"][name] <= max(ts)
        expected = r["ratio"] <= r["goal"] if r["op"] == "<=" else r["ratio"] >= r["goal"]
        assert r["passed"] == expected


def test_limits_follow_the_sizes(results):
    by = {r["case"]: r for r in results}
    assert by["gd_step"]["limit"] == pytest.approx(32 / 8)
    assert all(len(ts) == 2 for ts in by["gd_step"]["samples"].values())  # repeats=2 rounds
    assert by["inference"]["limit"] == pytest.approx(64 / 8)
    assert by["fit_5"]["limit"] == by["fit_100"]["limit"] == pytest.approx(32 / 8)
    assert by["fit_auto_lr"]["limit"] == 1.0
    lim = by["sketched_vs_dense_ntk"]
    s = lim["seconds"]
    assert lim["limit"] == pytest.approx(
        (s["gemm_d"] + s["elementwise"]) / (s["gemm_k"] + s["elementwise"])
    )
    for name in ("two_layer_ntk", "deep_ntk"):  # the kernel's own upper-triangle GEMM
        s = by[name]["seconds"]
        assert by[name]["limit"] == pytest.approx(s["gemm_upper"] / s["gemm"])
    for r in results:  # every measured case states its physical limit
        assert r["skipped"] or (r["limit"] is not None and r["limit"] > 0 and r["limit_note"]), r
    mem = by["tiled_memory"]
    assert mem["result_bytes"] == 2048 * 2048 * 4
    assert mem["ratio"] == pytest.approx(mem["peak_bytes"] / mem["result_bytes"])


def test_tables(results):
    md = bench.markdown_table(results).splitlines()
    assert md[0].startswith("| case |") and md[1].startswith("|---|")
    assert len(md) == 2 + len(results)
    assert all(line.count(" | ") == 6 for line in md[2:])
    txt = bench.format_table(results).splitlines()
    assert len(txt) == 2 + len(results) and "gd_step" in txt[2 + 3]


def test_main_writes_json_atomically(tmp_path, capsys, monkeypatch):
    # main() has no sizes option: shrink the defaults of the two cases it runs
    for name in ("two_layer_ntk", "empirical_closed"):
        monkeypatch.setitem(
            bench.CASES,
            name,
            bench.CASES[name].__class__(**{**bench.CASES[name].__dict__, "full": TINY[name]}),
        )
    path = tmp_path / "sub" / "bench.json"
    rc = bench.main(
        [
            "--cases",
            "two_layer_ntk,empirical_closed",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--json",
            str(path),
            "--quiet",
        ]
    )
    assert rc == 0
    doc = json.loads(path.read_text())
    assert doc["schema"] == bench.SCHEMA
    assert doc["environment"]["threads"] == 1 and doc["environment"]["device"] == "cpu"
    assert doc["environment"]["torch"] and doc["environment"]["cpu_model"]
    assert [r["case"] for r in doc["results"]] == ["two_layer_ntk", "empirical_closed"]
    assert list((tmp_path / "sub").iterdir()) == [path]  # no temporary left behind
    out = capsys.readouterr().out
    assert "two_layer_ntk" in out and "empirical_closed" in out


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"cases": ["nope"]}, "case"),
        ({"cases": []}, "cases is empty"),
        ({"repeats": 0}, "repeats"),
        ({"warmup": -1}, "warmup"),
        ({"threads": 0}, "threads"),
        ({"sizes": {"nope": {"n": 1}}}, "sizes key"),
        ({"sizes": {"gd_step": {"q": 1}}}, "unknown key 'q'"),
        ({"sizes": {"gd_step": {"n": 0}}}, r"sizes\['gd_step'\]\['n'\]"),
        ({"sizes": {"gd_step": {"k": 1000}}}, "must not exceed d"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bench.run_benchmarks(progress=False, **kwargs)


def test_main_bad_case_exits_2(capsys):
    assert bench.main(["--cases", "nope", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ntkdr bench: error:")
