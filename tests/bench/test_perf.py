"""`hybridopt bench --quick` on the tiny random llama, and the GPU script's CPU (shrunk) mode.
Well-formedness only: no timing assertions."""
import json
import math

import pytest

from hybridopt.benchmarks.perf import cli, gpu_check
from hybridopt.cli import COMMANDS

REQUIRED_RATIOS = ("hybrid_step_over_floor", "hybrid_reuse_step_over_floor", "hybrid_step_over_fo_peft_step",
                   "hybrid_paired_over_central_step", "zo_step_over_two_forwards", "zo_pass_time_over_two_forwards",
                   "paired_probe_over_two_forwards", "zo_step_over_mezo_reference", "hybrid_memory_over_fo_peft",
                   "zo_full_memory_over_inference", "hybrid_memory_over_fo_full", "weight_pass_over_floor",
                   "weight_pass_over_two_forwards")
METHODS = ("fo-full", "fo-peft", "zo-full", "zo-peft", "hybrid", "hybrid-central", "hybrid-forward",
           "mezo-reference")


def test_bench_quick_writes_well_formed_json(tmp_path, capsys):
    assert cli.main(["--quick", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "bench.json").read_text())
    ratios = res["ratios"]
    for k in REQUIRED_RATIOS:
        v = ratios[k]
        assert isinstance(v, float) and math.isfinite(v) and v > 0, (k, v)
    # the steady state of a folded paired step: one pass, one write, two draws (tiny-llama is tied)
    assert ratios["zo_weight_passes_per_step"] == 1.0 and ratios["zo_weight_writes_per_step"] == 1.0
    assert ratios["zo_draws_per_step"] == 2.0 and ratios["mezo_reference_passes_per_step"] == 4
    assert res["methods"]["hybrid-central"]["zo_weight_passes_per_step"] == 2.0
    for m in METHODS:
        row = res["methods"][m]
        assert row["step_s"] > 0 and row["tokens_per_s"] > 0, m
        assert (row["peak_memory_bytes"] or 0) > 0 or m in ("hybrid-central", "hybrid-forward"), m
    assert res["methods"]["fo-peft"]["zo_weight_passes_per_step"] == 0
    assert res["memory"]["inference"]["peak_bytes"] > 0
    assert set(res["goals"]) <= set(ratios)
    assert "zo_pass_s" in res["definitions"] and res["profile"]["zo-full"]["step_s"] > 0
    assert res["profile"]["zo-full"]["labelled_s"]["zo.draw"] > 0          # the core's phases, labelled
    assert res["methods"]["zo-full"]["zo_pass_s"] > 0
    # the goals' ratios round by round: each from the same round's samples, the interval around the mean
    samples, reps = res["timing_samples"], res["config"]["reps"]
    for k in ("hybrid_step_over_floor", "zo_step_over_two_forwards", "zo_step_over_mezo_reference"):
        r = res["round_ratios"][k]
        assert len(r["values"]) == reps and r["ci95"][0] <= r["mean"] <= r["ci95"][1], (k, r)
    floor = [h / (p + 2 * f) for h, p, f in zip(samples["step[hybrid]"], samples["step[fo-peft]"], samples["forward"])]
    assert res["round_ratios"]["hybrid_step_over_floor"]["values"] == pytest.approx(floor, rel=1e-12)
    md = (tmp_path / "bench.md").read_text()
    assert "| hybrid |" in md and "hybrid_step_over_floor" in md and "Round by round" in md
    assert "hybrid_step_over_floor" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*.tmp"))


def test_gpu_script_runs_shrunk_on_cpu(tmp_path):
    rc = gpu_check.main(["--out", str(tmp_path), "--shrink", "--device", "cpu", "--reps", "1", "--batch", "2",
                         "--seq-len", "8", "--no-memory", "--no-profile"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert rc == 0, summary
    assert summary["chunk_elements"] == gpu_check.SHRUNK_CHUNK_ELEMENTS  # chunked paths exercised
    for shape in ("opt-1.3b", "llama-7b"):
        assert summary["phases"][f"{shape}/bench"]["ok"]
        restore = json.loads((tmp_path / shape / "restore.json").read_text())
        assert restore["dtype"] == "bfloat16" and restore["core_exact"] is True
        assert restore["folded_steps_equal_replay"] is True and restore["elements_moved_by_two_steps"] > 0
        assert restore["mezo_elements_changed"] > 0       # MeZO's +eps/-2eps/+eps does not restore bf16
        bench = json.loads((tmp_path / shape / "bench.json").read_text())
        assert bench["workload"]["shrunk"] is True and bench["ratios"]["zo_weight_passes_per_step"] == 1.0
        assert bench["config"]["chunk_elements"] == gpu_check.SHRUNK_CHUNK_ELEMENTS
        assert summary["phases"][f"{shape}/bench-rademacher"]["ok"]
        fast = json.loads((tmp_path / shape / "bench-rademacher.json").read_text())
        assert fast["config"]["direction"] == "rademacher" and bench["config"]["direction"] == "gaussian"
        assert fast["goals"]["hybrid_step_over_floor"]["goal"] == "<= 1.03"


@pytest.mark.parametrize("argv", [["--batch", "0"], ["--reps", "0"], ["--memory-only", "--no-memory"],
                                  ["--memory-items", "bogus"], ["--direction", "bogus"],
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
    assert COMMANDS["bench"][:2] == ("hybridopt.benchmarks.perf.cli", "main")


def test_phase_timer_brackets_the_zo_machinery_without_patching():
    """The benchmark's ZO time comes from the sweep context's phase timer: draws, perturbations and
    the update, each second once (nested phases subtracted), chunked probes and lookups included."""
    import torch

    import hybridopt as ho
    from hybridopt.sweep import PhaseTimer, SweepContext

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(200, 16), torch.nn.Linear(16, 200))
    ids = torch.randint(0, 200, (8, 5))

    def loss_fn(m, b):
        return torch.nn.functional.cross_entropy(m(ids[b]).reshape(-1, 200), ids[b].reshape(-1))

    prob = ho.ModuleProblem(model, loss_fn, list(model.parameters()), [], n=8)
    ctx = SweepContext(chunk_elements=1000)
    opt = ho.HybridOptimizer(prob, ho.HybridConfig(direction="rademacher"), cache_directions=False, context=ctx)
    assert len(ctx.row_chunks(model[1].weight.shape)) > 1 and model[1] in prob.chunked
    opt.step(torch.arange(8))
    ctx.timer = PhaseTimer()
    opt.step(torch.arange(8))
    t = ctx.timer
    assert set(t.seconds) == {"draw", "perturb", "update"}
    chunks = len(ctx.row_chunks(model[1].weight.shape)) + len(ctx.row_chunks(model[0].weight.shape))
    assert t.calls["update"] == chunks + 1                                     # head, embedding, bias
    assert 0 < t.total <= sum(t.seconds.values())
    assert t.exclusive["update"] < t.seconds["update"]                             # its draws are nested
