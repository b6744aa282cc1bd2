"""Figure and report scripts on tiny synthetic result files written by the test itself.

No training and no simulator: the scripts must draw from the files alone; the report's every
number must be traced to a file (ledger verification), and a tampered file must be caught.
"""
import json
import math
import re

import pytest

from hybridopt.io import write_json
from hybridopt.paper_figures import derive, ledger, report
from hybridopt.paper_figures.reproduce import draw_all, load_scale, plan_runs

from hybridopt.methods import METHODS  # noqa: E402


def fake_result(task, method, steps=12, n=4, speed=1.0, seed=0):
    """A result.json with the runner's schema; dev accuracy rises at a method-dependent speed."""
    zo = method in ("zo-full", "zo-peft", "hybrid")
    fo = method in ("fo-full", "fo-peft", "hybrid")
    dev = [[s, min(0.9, 0.5 + 0.4 * speed * s / steps)] for s in range(0, steps + 1, 2)]
    best = max(dev, key=lambda p: p[1])
    opt = {"lr_x": 1e-3, "lr_y": 1e-2, "mu": 1e-2, "q": 1, "fo_optimizer": "adam"}
    return {
        "task": task, "method": method, "model": "tiny-llama", "steps": steps,
        "dev_accuracy": {"best": best[1], "step": best[0]}, "test_accuracy": best[1] - 0.01,
        "zero_shot_dev_accuracy": dev[0][1],
        "train_loss_curve": [[s, 0.7 * math.exp(-0.05 * speed * s)] for s in range(1, steps + 1)],
        "dev_curve": dev, "seconds_per_step": 0.1 * (2 if fo else 1), "peak_memory_bytes": int(2**30 * (2 if method == "fo-full" else 1)),
        "tokens_per_second": 500.0,
        "stationarity": {"epoch": [s // n for s in range(steps)],
                         "fo_grad_sq": [1.0 / (1 + s) for s in range(steps)] if fo else [],
                         "zo_grad_sq_est": [2.0 / (1 + s) for s in range(steps)] if zo else [],
                         "zo_curvature": [5.0 + 0.1 * s for s in range(steps)] if method == "hybrid" else [],
                         "zo_dim": 1000 if zo else 0, "mu": 1e-2},
        "oracle_calls": {"zo_evals": 2 * steps if zo else 0, "fo_grads": steps if fo else 0,
                         "zo_draws_per_step": 2.0 if zo else 0, "zo_weight_writes_per_step": 1.0 if zo else 0,
                         "zo_weight_passes_per_step": 1.0 if zo else 0},
        "sizes": {"train": 16, "dev": 16, "test": 16, "steps_per_epoch": n, "zo_params": 1000 if zo else 0,
                  "fo_params": 100 if fo else 0},
        "seeds": {"seed": seed, "sampler": seed, "zo_directions": seed, "adapter_init": seed},
        "timing": {"wall_seconds": 3.0, "train_seconds": 1.2, "eval_seconds": 0.5},
        "config": {"task": task, "method": method, "batch_size": 4, "eval_every": 2, "optimizer": opt},
        "git_commit": "abc", "versions": {}, "machine": {"platform": "Linux", "processor": "x86_64",
                                                      "cpu_threads": 2, "device": "cpu"},
        "communication": None,
    }


@pytest.fixture
def folder(tmp_path):
    scale = load_scale("quick")
    write_json(tmp_path / "scale.json", scale)
    speeds = {"fo-full": 1.0, "fo-peft": 0.8, "zo-full": 0.2, "zo-peft": 0.2, "hybrid": 2.0}
    for task, methods in (("sst2", METHODS), ("wsc", ("fo-peft", "zo-full", "hybrid"))):
        for m in methods:
            write_json(tmp_path / "runs" / task / m / "result.json", fake_result(task, m, speed=speeds[m]))
    write_json(tmp_path / "reproduce.json", {
        "jobs": {"run:sst2/hybrid": {"wall_s": 3.0, "status": "done", "command": "hybridopt finetune"}},
        "sessions": [{"wall_s": 12.0, "draw_s": 2.0}], "totals": {"jobs_wall_s": 3.0}, "git_commit": "abc",
        "machine": {"platform": "Linux-x86_64", "cpu_count": 2, "torch_threads": 2, "torch": "2.x",
                    "python": "3.11", "cuda": None, "memory_bytes": 2**34}})
    return tmp_path


def test_figures_tables_and_report_from_files_only(folder):
    files = draw_all(folder)
    names = {f.name for f in files}
    for stem in ("curves_sst2", "curves_wsc", "steps_to_target", "bound_sst2", "bound_wsc", "memory_speed"):
        assert f"{stem}.png" in names and f"{stem}.pdf" in names, stem
    assert all(f.stat().st_size > 1000 for f in files)
    rep, problems = report.write(folder, files)
    assert problems == []
    text = rep.read_text()
    for f in files:
        if f.suffix == ".png":
            assert f"]({f.relative_to(folder).as_posix()})" in text
    assert "Pipeline check only" in text                     # tiny-llama is flagged
    assert "estimated along the run, not certified" in text
    for t in ("accuracy", "steps_to_target", "bound_constants", "memory_speed"):
        assert (folder / "tables" / f"{t}.md").stat().st_size > 0
    # hybrid (speed 2) reaches 95% of FT's best first: claims table says so
    assert re.search(r"up to 50% fewer steps.*than FT \| SST-2 \| steps to target: hybrid \d+ vs FT \d+", text)


def test_every_number_is_traced_and_tampering_is_caught(folder):
    files = draw_all(folder)
    rep, problems = report.write(folder, files)
    assert problems == []
    side = json.loads(rep.with_suffix(".sources.json").read_text())
    assert len(side["entries"]) > 50
    # change one number in a result file: the recorded text no longer matches the file
    p = folder / "runs" / "sst2" / "hybrid" / "result.json"
    r = json.loads(p.read_text())
    r["test_accuracy"] = 0.123
    write_json(p, r)
    assert any("files give '12.3%'" in s for s in ledger.verify(rep))
    # a number typed into the report text is caught too
    rep.write_text(rep.read_text() + "\nspeed-up 42\n")
    assert ledger.verify(rep)


def test_stray_numbers_detector():
    assert ledger.stray_numbers("SST-2 with smollm2-135m, P1, L6(A), ε⁴, fig_2.png") == []
    assert ledger.stray_numbers("took 12 s") == ["12"]
    assert ledger.stray_numbers("\u27e63\u27e7 of runs, 95%") == ["95"]
    assert ledger.stray_numbers("![x](figures/P1_familyA.png 2)") == []


def test_derived_quantities():
    dev = [[0, 0.5], [2, 0.7], [4, 0.86], [6, 0.9]]
    assert derive.steps_to_target(dev, 0.9, 0.95) == 4            # 0.855 first reached at step 4
    assert derive.steps_to_target(dev, 1.0, 0.95) is None
    assert derive.reduction(2, 4) == 0.5 and derive.reduction(None, 4) is None
    r = fake_result("sst2", "hybrid")
    cur = derive.stationarity_curves(r)
    assert cur["T"] == [1, 2, 3]                                   # 12 steps, 4 per epoch
    assert cur["y"][0] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    c = derive.estimate_constants(r)
    assert c["n"] == 4 and c["d_x"] == 1000 and c["L_x0"] == pytest.approx(6.1 / 1000)
    assert c["G"] == pytest.approx(math.sqrt(1.0 + (2 + 1 + 2 / 3 + 0.5) / 4))
    b = derive.bound_curves(r)
    assert len(b["B_x"]) == 3 and all(x > 0 for x in b["B_x"]) and b["B_x"][0] > b["B_x"][-1]


def test_presets_plan_and_validate():
    from hybridopt.benchmarks.config import build_config

    for name in ("quick", "default", "paper"):
        scale = load_scale(name)
        jobs = plan_runs(scale)
        assert {j["method"] for j in jobs if j["task"] == "sst2"} == set(METHODS)
        for task in ("wsc", "winogrande"):
            assert {"fo-peft", "zo-full", "hybrid"} <= {j["method"] for j in jobs if j["task"] == task}
        for j in jobs:
            build_config(j["task"], j["method"], None, j["overrides"])
        if name != "paper":   # equal step budgets within a task
            for task in ("sst2", "wsc", "winogrande"):
                assert len({j["overrides"]["steps"] for j in jobs if j["task"] == task}) == 1
    assert {j["overrides"]["model"] for j in plan_runs(load_scale("paper"))} == {"opt-1.3b", "vicuna-7b", "llama-7b"}
    assert {j["overrides"]["model"] for j in plan_runs(load_scale("default"))} == {"smollm2-135m"}


def test_run_config_files_round_trip_through_the_cli_config_loader(tmp_path):
    """Each run's config.json (what `hybridopt finetune --config` gets) rebuilds the same config."""
    from hybridopt.benchmarks.config import build_config

    for name in ("quick", "default", "paper"):
        for j in plan_runs(load_scale(name)):
            cfg = build_config(j["task"], j["method"], None, j["overrides"])
            d = {k: v for k, v in cfg.to_dict().items() if not (k == "peft" and not cfg.uses_peft)}
            write_json(tmp_path / "c.json", d)
            assert build_config(None, None, str(tmp_path / "c.json"), None).to_dict() == cfg.to_dict(), j


def test_isolated_run_in_a_subprocess(tmp_path):
    """The default scale runs each fine-tuning run as `hybridopt finetune --config ...` in its own process."""
    from hybridopt.paper_figures.reproduce import run_one

    scale = load_scale("quick")
    job = next(j for j in plan_runs(scale) if j["method"] == "fo-full")
    code, cmd = run_one(job, tmp_path, {**scale, "isolate_runs": True}, progress=False)
    assert code == 0 and cmd.startswith("hybridopt finetune --config DIR/runs/sst2/fo-full/config.json")
    r = json.loads((tmp_path / "runs" / "sst2" / "fo-full" / "result.json").read_text())
    assert r["method"] == "fo-full" and r["model"] == "tiny-llama" and r["steps"] == job["overrides"]["steps"]
