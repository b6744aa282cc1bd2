"""`hybridopt bench --quick` on the tiny random llama, and the GPU script's CPU (shrunk) mode.
Well-formedness only: no timing assertions."""
import json
import math

import pytest

from benchmarks.perf import cli, gpu_check
from hybridopt.cli import COMMANDS

REQUIRED_RATIOS = ("hybrid_step_over_floor", "hybrid_reuse_step_over_floor", "zo_pass_time_over_two_forwards",
                   "zo_step_over_mezo_reference", "hybrid_memory_over_fo_peft", "zo_full_memory_over_inference",
                   "hybrid_memory_over_fo_full")
METHODS = ("fo-full", "fo-peft", "zo-full", "zo-peft", "hybrid", "mezo-reference")


def test_bench_quick_writes_well_formed_json(tmp_path, capsys):
    assert cli.main(["--quick", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "bench.json").read_text())
    ratios = res["ratios"]
    for k in REQUIRED_RATIOS:
        v = ratios[k]
        assert isinstance(v, float) and math.isfinite(v) and v > 0, (k, v)
    passes = ratios["zo_passes_per_step"]
    assert isinstance(passes, int) and not isinstance(passes, bool) and 1 <= passes <= 3
    assert ratios["mezo_reference_passes_per_step"] == 4
    for m in METHODS:
        row = res["methods"][m]
        assert row["step_s"] > 0 and row["tokens_per_s"] > 0 and row["peak_memory_bytes"] > 0, m
    assert res["methods"]["fo-peft"]["zo_passes_per_step"] == 0
    assert res["memory"]["inference"]["peak_bytes"] > 0
    assert set(res["goals"]) <= set(ratios)
    assert "zo_pass_s" in res["definitions"] and res["profile"]["zo-full"]["step_s"] > 0
    md = (tmp_path / "bench.md").read_text()
    assert "| hybrid |" in md and "hybrid_step_over_floor" in md
    assert "hybrid_step_over_floor" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*.tmp"))


def test_gpu_script_runs_shrunk_on_cpu(tmp_path):
    rc = gpu_check.main(["--out", str(tmp_path), "--shrink", "--device", "cpu", "--reps", "1", "--batch", "2",
                         "--seq-len", "8", "--no-memory", "--no-profile"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert rc == 0, summary
    for shape in ("opt-1.3b", "llama-7b"):
        assert summary["phases"][f"{shape}/bench"]["ok"]
        restore = json.loads((tmp_path / shape / "restore.json").read_text())
        assert restore["dtype"] == "bfloat16" and restore["core_exact"] is True
        assert restore["mezo_elements_changed"] > 0       # MeZO's +eps/-2eps/+eps does not restore bf16
        bench = json.loads((tmp_path / shape / "bench.json").read_text())
        assert bench["workload"]["shrunk"] is True and bench["ratios"]["zo_passes_per_step"] == 3


@pytest.mark.parametrize("argv", [["--batch", "0"], ["--reps", "0"], ["--memory-only", "--no-memory"],
                                  ["--memory-items", "bogus"],
                                  ["--nonsense"]])
def test_bench_bad_arguments_exit_2(argv, tmp_path, capsys):
    try:
        rc = cli.main(argv + ["--out", str(tmp_path)])
    except SystemExit as e:
        rc = e.code
    assert rc == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "bench.json").exists()


def test_bench_command_registered():
    assert COMMANDS["bench"][:2] == ("benchmarks.perf.cli", "main")
