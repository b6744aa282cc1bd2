"""``hybridopt lr-scan``: divergence and collapse are told apart from stability on real probe runs
(tiny-llama), a rerun reuses every probe, bad input is one line and exit code 2."""
from __future__ import annotations

import json
import math
import time

import pytest

from hybridopt.cli import main as cli

# 60 steps of ~0.05 s: a diverged probe is stopped (polled every 0.5 s) long before its budget
TINY = ["--model", "tiny-llama", "--task", "sst2", "--steps", "60", "--eval-every", "20", "--n-train", "16",
        "--n-dev", "8", "--n-test", "8", "--batch-size", "4", "--max-length", "64", "--truncate-prompts"]


def test_diverged_at_is_the_first_step_above_the_factor_or_not_finite():
    from hybridopt.benchmarks.schema import DIVERGE_FACTOR, diverged_at
    assert DIVERGE_FACTOR == 10.0 and diverged_at([1.0, 10.5]) == 2      # the default rule: ten times
    assert diverged_at([1.0, 2.0, 9.9, 3.0], 10.0) is None
    assert diverged_at([1.0, 2.0, 10.5, 3.0], 10.0) == 3
    assert diverged_at([1.0, 2.0, 10.5], 20.0) is None
    assert diverged_at([1.0, math.nan], 10.0) == 2
    assert diverged_at([1.0, math.inf], 1e300) == 2
    assert diverged_at([], 10.0) is None


def test_scan_tells_stable_diverged_and_collapsed_apart_and_a_rerun_reuses_them(tmp_path, capsys):
    out = tmp_path / "scan"
    assert cli(["lr-scan", "--lr-x", "1e-6,1e2,1e5", "--out", str(out), "--no-progress", *TINY]) == 0
    probes = {p["lr_x"]: p for p in json.loads((out / "scan.json").read_text())["probes"]}
    assert probes[1e-6]["status"] == "stable" and probes[1e-6]["steps_run"] == 60
    # lr_x = 100: the loss explodes at step 2 and the probe is stopped there, not run to its budget
    assert probes[100.0]["status"] == "diverged" and probes[100.0]["diverged_at"] == 2
    assert probes[100.0]["steps_run"] < 30 and probes[100.0]["loss_max"] > 10 * probes[100.0]["loss_first"]
    # lr_x = 1e5: the loss sits at log 2 (a uniform prediction) with zero gradients: collapsed
    assert probes[1e5]["status"] == "collapsed" and abs(probes[1e5]["loss_last5_mean"] - math.log(2)) < 1e-3
    printed = capsys.readouterr().out
    assert "largest stable lr_x: 1e-06" in printed and "diverged at step 2" in printed
    assert "--lr-x 100.0" in probes[100.0]["command"] and "DIR/lrx100" in probes[100.0]["command"]
    t0 = time.perf_counter()
    assert cli(["lr-scan", "--lr-x", "1e-6,1e2,1e5", "--out", str(out), "--no-progress", *TINY]) == 0
    assert time.perf_counter() - t0 < 5   # nothing is rerun
    again = {p["lr_x"]: p for p in json.loads((out / "scan.json").read_text())["probes"]}
    assert {v: p["status"] for v, p in again.items()} == {v: p["status"] for v, p in probes.items()}
    assert all(p["reused"] for p in again.values())


@pytest.mark.parametrize("argv, words", [
    (["--lr-x", "abc"], "comma-separated positive numbers"),
    (["--lr-x", "1e-4,-1"], "comma-separated positive numbers"),
    (["--lr-x", "1e-4", "--diverge-factor", "0.5"], "--diverge-factor"),
    (["--lr-x", "1e-4", "--method", "nope", *TINY], "nope"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, words):
    with pytest.raises(SystemExit) if argv[1] in ("abc", "1e-4,-1") or "--diverge-factor" in argv else _no_raise():
        rc = cli(["lr-scan", "--out", str(tmp_path / "s"), *argv])
        assert rc == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "s" / "scan.json").exists()


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
