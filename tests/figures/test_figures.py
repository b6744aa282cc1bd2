"""Figure and report scripts on synthetic result files written by the test itself.

No training and no simulator: the scripts must draw from the files alone; the report's every
number and verdict must be traced to a file (ledger verification), a tampered file must be
caught, and the verdicts must follow the intervals.
"""
import json
import math
import re

import pytest

from hybridopt.benchmarks import schema
from hybridopt.benchmarks.pipeline import Job, load_scale, plan_runs
from hybridopt.io import write_json
from hybridopt.methods import METHODS
from hybridopt.paper_figures import FIGURES, derive, draw_all, ledger, report

SEEDS = (0, 1, 2)


def fake_result(task, method, steps=12, n=4, speed=1.0, seed=0, lr_x=1e-3, test_shift=0.0):
    """A result.json of the current schema; dev accuracy rises at a method-dependent speed, with a
    small seed-dependent wobble (so intervals have a width)."""
    zo = method in ("zo-full", "zo-peft", "hybrid")
    fo = method in ("fo-full", "fo-peft", "hybrid")
    wob = 0.01 * ((seed * 7) % 3 - 1)
    dev = [[s, min(0.9, 0.5 + 0.4 * speed * s / steps + (wob if s else 0.0))] for s in range(0, steps + 1, 2)]
    best = max(dev, key=lambda p: p[1])
    opt = {"lr_x": lr_x, "lr_y": 1e-2, "mu": 1e-2, "q": 1, "fo_optimizer": "adam"}
    d = {
        "schema": schema.SCHEMA, "task": task, "method": method, "model": "tiny-llama", "steps": steps,
        "metric": "accuracy", "dev_metric": {"name": "accuracy", "best": best[1], "step": best[0], "higher_is_better": True},
        "test_metric": best[1] - 0.01 + test_shift + wob,
        "dev_accuracy": {"best": best[1], "step": best[0]}, "test_accuracy": best[1] - 0.01 + test_shift + wob,
        "zero_shot_dev_accuracy": dev[0][1],
        "train_loss_curve": [[s, 0.7 * math.exp(-0.05 * speed * s) + 0.001 * seed] for s in range(1, steps + 1)],
        "dev_curve": dev, "seconds_per_step": 0.1 * (2 if zo and fo else 1),
        "step_seconds": [0.1 * (2 if zo and fo else 1)] * steps,
        "peak_memory_bytes": int(2**30 * (2 if method == "fo-full" else 1) + seed * 2**20),
        "tokens_per_second": 500.0 + seed,
        "stationarity": {"epoch": [s // n for s in range(steps)],
                         "fo_grad_sq": [1.0 / (1 + s) for s in range(steps)] if fo else [],
                         "zo_grad_sq_est": [2.0 / (1 + s) for s in range(steps)] if zo else [],
                         "zo_curvature": [5.0 + 0.1 * s for s in range(steps)] if method == "hybrid" else [],
                         "zo_dim": 1000 if zo else 0, "mu": 1e-2},
        "changes": {"zo_first": [-lr_x * 2.0 / (1 + s) for s in range(steps)] if zo else [],
                    "zo_second": [-lr_x * 2.0 / (1 + s) * (1 - 0.5 * lr_x * 500) for s in range(steps)]
                    if method == "hybrid" else [],
                    "fo_first": [-0.01 / (1 + s) for s in range(steps)] if method in ("fo-peft", "hybrid") else []},
        "oracle_calls": {"zo_evals": 2 * steps if zo else 0, "fo_grads": steps if fo else 0,
                         "zo_draws_per_step": 2.0 if zo else 0, "zo_weight_writes_per_step": 1.0 if zo else 0,
                         "zo_weight_passes_per_step": 1.0 if zo else 0},
        "sizes": {"train": 16, "dev": 16, "test": 16, "steps_per_epoch": n, "zo_params": 1000 if zo else 0,
                  "fo_params": 100 if fo else 0},
        "seeds": {"seed": seed, "sampler": seed, "zo_directions": seed, "adapter_init": seed},
        "timing": {"wall_seconds": 3.0, "train_seconds": 1.2, "eval_seconds": 0.5},
        "config": {"task": task, "method": method, "batch_size": 4, "eval_every": 2, "seed": seed, "optimizer": opt},
        "git_commit": "abc", "versions": {}, "machine": {"platform": "Linux", "processor": "x86_64",
                                                      "cpu_threads": 2, "device": "cpu"},
        "communication": None,
    }
    schema.RunResult.from_dict(d)      # the fake follows the schema the runner writes
    return d


def make_folder(path, hybrid_shift=0.0, seeds=SEEDS):
    scale = load_scale("quick")
    scale["groups"][0]["methods"].append({"name": "hybrid-lrx1e-4", "method": "hybrid", "label": "Hybrid η_x 1e-4",
                                          "short": "Hybrid 1e-4", "optimizer": {"lr_x": 1e-4}})
    write_json(path / "scale.json", scale)
    speeds = {"fo-full": 1.0, "fo-peft": 0.8, "zo-full": 0.2, "zo-peft": 0.2, "hybrid": 2.0, "hybrid-lrx1e-4": 1.5}
    for task, variants in (("sst2", METHODS + ("hybrid-lrx1e-4",)), ("wsc", ("fo-peft", "zo-full", "hybrid"))):
        for v in variants:
            m = "hybrid" if v.startswith("hybrid") else v
            for s in seeds:
                write_json(path / "runs" / task / v / f"seed{s}" / "result.json",
                           fake_result(task, m, speed=speeds[v], seed=s, lr_x=1e-4 if v != m else 1e-3,
                                       test_shift=hybrid_shift if m == "hybrid" else 0.0))
    write_json(path / "reproduce.json", {
        "jobs": {"run:sst2/hybrid/seed0": {"wall_s": 3.0, "status": "done", "command": "hybridopt finetune",
                                           "loadavg_start": [0.5, 0.4, 0.3]},
                 "run:sst2/hybrid-lrx1e-2/seed0": {"wall_s": 1.0, "status": "failed rc=3", "command": "hybridopt finetune"}},
        "sessions": [{"wall_s": 12.0, "draw_s": 2.0, "loadavg_start": [0.5, 0.4, 0.3], "loadavg_end": [1.0, 0.5, 0.3]}],
        "totals": {"jobs_wall_s": 3.0}, "git_commit": "abc",
        "machine": {"platform": "Linux-x86_64", "cpu_count": 2, "torch_threads": 2, "torch": "2.x",
                    "python": "3.11", "cuda": None, "memory_bytes": 2**34}})
    return path


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """A folder of synthetic results with every figure drawn (once: drawing is the slow part)."""
    folder = make_folder(tmp_path_factory.mktemp("drawn"))
    return folder, draw_all(folder)


def test_figures_tables_and_report_from_files_only(drawn):
    folder, files = drawn
    names = {f.name for f in files}
    for stem in ("curves_sst2", "curves_wsc", "paired_sst2", "paired_wsc", "contributions_sst2", "steps_to_target",
                 "bound_sst2", "bound_wsc", "memory_speed"):
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
    assert "failed rc=3" in text                              # a run that stopped is listed
    for t in ("accuracy", "paired", "contributions", "steps_to_target", "bound_constants", "memory_speed"):
        assert (folder / "tables" / f"{t}.md").stat().st_size > 0
    acc = (folder / "tables" / "accuracy.md").read_text()
    assert re.search(r"\| Hybrid η_x 1e-4 \| \d+\.\d% ± \d+\.\d% \|", acc)      # mean ± half-width, per variant
    # hybrid (speed 2) reaches 95% of FT's best first in every seed: fewer steps, supported by the interval
    assert re.search(r"fewer steps than FT .*\| SST-2, Hybrid \| steps to target: Hybrid [\d.]+ ± [\d.]+ vs FT", text)
    assert re.search(r"SST-2, Hybrid \| steps to target:[^|]*\| supported: 95% interval \[-", text)


def test_every_number_is_traced_and_tampering_is_caught(drawn, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(drawn[0], folder)
    files = [folder / f.relative_to(drawn[0]) for f in drawn[1]]
    rep, problems = report.write(folder, files)
    assert problems == []
    side = json.loads(rep.with_suffix(".sources.json").read_text())
    assert len(side["entries"]) > 200
    assert any(e["op"].startswith("verdict_") for e in side["entries"])       # verdicts are traced too
    # change one number in a result file: the recorded texts no longer match the files
    p = folder / "runs" / "sst2" / "hybrid" / "seed1" / "result.json"
    r = json.loads(p.read_text())
    r["test_accuracy"] = 0.123
    write_json(p, r)
    assert any("files give" in s for s in ledger.verify(rep))
    # a number typed into the report text is caught too
    rep.write_text(rep.read_text() + "\nspeed-up 42\n")
    assert ledger.verify(rep)


@pytest.mark.parametrize("shift, word", [(0.05, "supported"), (-0.2, "contradicted")])
def test_accuracy_verdicts_follow_the_intervals(tmp_path, shift, word):
    make_folder(tmp_path, hybrid_shift=shift)
    rep, problems = report.write(tmp_path, [])
    assert problems == []
    rows = [l for l in rep.read_text().splitlines() if l.startswith("| Hybrid fine-tuning reaches at least the accuracy of PEFT")]
    assert rows and all(f"| {word}: 95% interval" in l for l in rows)


def test_one_seed_gives_no_verdict(tmp_path):
    make_folder(tmp_path, seeds=(0,))
    rep, problems = report.write(tmp_path, [])
    assert problems == []
    text = rep.read_text()
    assert "Illustration only" in text and derive.NO_INTERVAL in text
    assert "supported:" not in text and "contradicted:" not in text


def test_stray_numbers_detector():
    assert ledger.stray_numbers("SST-2 with smollm2-135m, P1, L6(A), ε⁴, fig_2.png") == []
    assert ledger.stray_numbers("took 12 s") == ["12"]
    assert ledger.stray_numbers("\u27e63\u27e7 of runs, 95%") == ["95"]
    assert ledger.stray_numbers("![x](figures/P1_familyA.png 2)") == []


def test_intervals_and_verdicts():
    iv = derive.interval([1.0, 2.0, 3.0])
    assert iv.mean == 2.0 and iv.half == pytest.approx(4.302652729911275 * 1.0 / math.sqrt(3))
    assert derive.interval([5.0]).half is None and derive.interval([2.0, 2.0, 2.0]).half == 0.0
    assert derive.paired_stat([3, 4, 5], [1, 1, 1], "mean") == 3.0
    assert derive.verdict([1.0, 1.1, 0.9], "not_worse").startswith(derive.SUPPORTED)
    assert derive.verdict([-1.0, -1.1, -0.9], "not_worse").startswith(derive.CONTRADICTED)
    assert derive.verdict([-1.0, 1.0, 0.2], "not_worse").startswith(derive.UNDECIDED)
    assert derive.verdict([0.0, 0.0, 0.0], "not_worse").startswith(derive.SUPPORTED)      # equal in every seed
    assert derive.verdict([0.0, 0.0, 0.0], "less").startswith(derive.CONTRADICTED)        # no saving in any seed
    assert derive.verdict([-2.0, -3.0, -2.5], "less").startswith(derive.SUPPORTED)
    assert derive.verdict([0.30, 0.31, 0.32], "greater").startswith(derive.SUPPORTED)
    assert derive.verdict([0.1, 0.2, 0.3], "greater").startswith(derive.UNDECIDED)       # t with two d.o.f. is wide
    assert derive.verdict([4.0], "less") == derive.NO_INTERVAL
    assert derive.verdict([-2.0, -3.0], "less") == derive.NO_INTERVAL               # two seeds: an interval, no verdict
    assert sorted(derive.OPS) == sorted(set(derive.OPS)) and all(callable(f) for f in derive.OPS.values())


def test_steps_seconds_and_contributions():
    ref = fake_result("sst2", "fo-full", speed=1.0)
    fast = fake_result("sst2", "hybrid", speed=2.0)
    slow = fake_result("sst2", "zo-full", speed=0.2)
    frac = 0.95
    s, ok = derive.run_to_target(fast, ref, frac)
    assert ok and s == derive.steps_to_target(fast["dev_curve"], ref["dev_metric"]["best"], frac)
    s_slow, ok_slow = derive.run_to_target(slow, ref, frac)
    assert not ok_slow and s_slow == slow["steps"] + slow["config"]["eval_every"]    # censored: budget + one interval
    assert derive.seconds_to_step(fast, s) == pytest.approx(sum(fast["step_seconds"][: int(s)]))
    assert derive.to_target([fast, slow], [ref, ref], frac, "seconds")[1] == pytest.approx(sum(slow["step_seconds"]))
    assert derive.target_stat([fast, slow], [ref, ref], frac, part="reached") == 1
    # the untrained model already meets the target: no verdict on "fewer steps", in steps or seconds
    flat = [fake_result("sst2", "fo-full", speed=0.0, seed=k) for k in range(3)]   # best dev = the zero-shot one
    hyb = [fake_result("sst2", "hybrid", speed=2.0, seed=k) for k in range(3)]
    peft = [fake_result("sst2", "fo-peft", speed=1.0, seed=k) for k in range(3)]
    for unit in ("steps", "seconds"):
        assert derive.verdict_to_target(hyb, peft, flat, frac, unit) == derive.NO_TARGET
    refs = [fake_result("sst2", "fo-full", speed=1.0, seed=k) for k in range(3)]
    assert derive.verdict_to_target(hyb, peft, refs, frac).startswith(derive.SUPPORTED)   # 2x faster: fewer steps
    dz, df = derive.contribution(fast, "zo"), derive.contribution(fast, "fo")
    assert dz == pytest.approx(-sum(fast["changes"]["zo_first"])) and dz > 0 and df > 0
    assert derive.zo_share(fast) == pytest.approx(dz / (dz + df))
    assert derive.contribution(slow, "fo") is None and derive.zo_share(slow) is None
    assert derive.steps_to_target([[0, 0.5], [2, 0.7], [4, 0.86], [6, 0.9]], 0.9, 0.95) == 4
    assert derive.steps_to_target([[0, 2.0], [2, 1.0]], 1.0, 0.95, higher_is_better=False) == 2


def test_stationarity_and_bound_constants():
    r = fake_result("sst2", "hybrid")
    cur = derive.stationarity_curves(r)
    assert cur["T"] == [1, 2, 3]                                   # 12 steps, 4 per epoch
    assert cur["y"][0] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    c = derive.estimate_constants(r)
    assert c["n"] == 4 and c["d_x"] == 1000 and c["L_x0"] == pytest.approx(6.1 / 1000)
    assert c["G"] == pytest.approx(math.sqrt(1.0 + (2 + 1 + 2 / 3 + 0.5) / 4))
    b = derive.bound_curves(r)
    assert len(b["B_x"]) == 3 and all(x > 0 for x in b["B_x"]) and b["B_x"][0] > b["B_x"][-1]


def test_schema_round_trip_versions_and_errors(tmp_path):
    d = fake_result("sst2", "hybrid")
    r = schema.RunResult.from_dict(d)
    assert r.to_dict() == d and list(r.to_dict())[0] == "schema"
    v1 = {k: v for k, v in d.items() if k not in ("schema", "step_seconds", "changes")}   # the first schema
    old = schema.RunResult.from_dict(v1)
    assert old.schema == schema.SCHEMAS[0] and old.step_seconds == [] and old.changes.zo_first == []
    with pytest.raises(schema.SchemaError, match="unknown field.*surprise"):
        schema.RunResult.from_dict({**d, "surprise": 1})
    with pytest.raises(schema.SchemaError, match="stationarity.*unknown field.*zo_dims"):
        schema.RunResult.from_dict({**d, "stationarity": {**d["stationarity"], "zo_dims": 3}})
    with pytest.raises(schema.SchemaError, match="missing field 'sizes'"):
        schema.RunResult.from_dict({k: v for k, v in d.items() if k != "sizes"})
    with pytest.raises(schema.SchemaError, match="unknown schema"):
        schema.RunResult.from_dict({**d, "schema": "hybridopt.result/9"})
    write_json(tmp_path / "result.json", d)
    assert schema.load(tmp_path / "result.json") == r


def test_presets_plan_and_validate():
    from hybridopt.benchmarks.config import build_config

    from hybridopt.benchmarks.pipeline import SCALES

    assert SCALES[:4] == ("quick", "default", "study", "paper")
    for name in SCALES:
        scale = load_scale(name)
        jobs = plan_runs(scale)
        assert all(isinstance(j, Job) for j in jobs)
        assert len({j.name for j in jobs}) == len(jobs)
        seeds = [j.seed for j in jobs]
        assert seeds == sorted(seeds)                               # seed by seed: a partial run has whole seeds
        for task in {j.task for j in jobs}:       # every task of every preset compares the hybrid with PEFT
            assert {"fo-peft", "hybrid"} <= {j.method for j in jobs if j.task == task}, (name, task)
        for j in jobs:
            if name != "paper":      # the paper preset needs its GPU and models to validate
                build_config(j.task, j.method, None, j.overrides)
            assert j.overrides["seed"] == j.seed
        if name != "paper":   # equal step budgets within a task
            for g in {j.group for j in jobs}:
                assert len({j.overrides["steps"] for j in jobs if j.group == g}) == 1, (name, g)
    assert {j.overrides["model"] for j in plan_runs(load_scale("paper"))} == {"opt-1.3b", "vicuna-7b", "llama-7b"}
    # every study preset (issue #14's design): the CPU model, the four methods, >= 3 lr_x, >= 3 seeds, the full
    # test split, dev >= 200 examples or all of a smaller dev split; its estimate within the 150-minute budget
    from hybridopt.benchmarks.pipeline import estimate_seconds

    for name in (s for s in SCALES if s.startswith("study")):
        scale = load_scale(name)
        study = plan_runs(scale)
        assert {j.overrides["model"] for j in study} == {"smollm2-135m"}
        for g in {j.group for j in study}:
            runs = [j for j in study if j.group == g]
            assert {j.method for j in runs} == {"fo-peft", "fo-full", "zo-full", "hybrid"}, name
            assert len({j.overrides["optimizer"]["lr_x"] for j in runs if j.method == "hybrid"}) >= 3, name
            assert len({j.seed for j in runs}) >= 3
            assert all(j.overrides.get("n_test") is None for j in runs)                     # full test split
            assert all(j.overrides["n_dev"] is None or j.overrides["n_dev"] >= 200 for j in runs)
        assert sum(estimate_seconds(j, scale) for j in study) <= 150 * 60, name


def test_run_config_files_round_trip_through_the_cli_config_loader(tmp_path):
    """Each run's config.json (what `hybridopt finetune --config` gets) rebuilds the same config."""
    from hybridopt.benchmarks.config import build_config

    from hybridopt.benchmarks.pipeline import SCALES

    for name in (s for s in SCALES if s != "paper"):
        for j in plan_runs(load_scale(name)):
            cfg = build_config(j.task, j.method, None, j.overrides)
            d = {k: v for k, v in cfg.to_dict().items() if not (k == "peft" and not cfg.uses_peft)}
            write_json(tmp_path / "c.json", d)
            assert build_config(None, None, str(tmp_path / "c.json"), None).to_dict() == cfg.to_dict(), j


def test_figure_modules_read_results_only():
    """paper_figures never imports the runner, the pipeline, the optimizer core or the simulator's runs."""
    import pathlib

    import hybridopt.paper_figures as pf

    for f in pathlib.Path(pf.__file__).parent.glob("*.py"):
        imports = [l.strip() for l in f.read_text().splitlines() if l.strip().startswith(("import ", "from "))]
        for banned in ("runner", "pipeline", "torch", "sim_cli", "simulator", "hybridopt.optimizer", "config"):
            assert not any(banned in l.split(" import ")[0] for l in imports), (f.name, banned)
    assert len(FIGURES) == len(set(FIGURES))


def test_diverged_count_uses_the_lr_scan_rule():
    calm = fake_result("sst2", "hybrid")
    blown = fake_result("sst2", "hybrid", seed=1)
    blown["train_loss_curve"][5][1] = 11 * blown["train_loss_curve"][0][1]
    nan = fake_result("sst2", "hybrid", seed=2)
    nan["train_loss_curve"][3][1] = float("nan")
    assert derive.diverged_count([calm]) == 0
    assert derive.diverged_count([calm, blown, nan]) == 2
    assert derive.diverged_count([blown], factor=20.0) == 0


def test_identical_curves_are_labelled_not_hidden(tmp_path, monkeypatch):
    """Two methods with the same curve (here the fake zo-full and zo-peft) must not hide one another: the later one
    is drawn on top, dashed and thinner, and its legend entry names the method it coincides with."""
    import numpy as np

    from hybridopt.paper_figures import fig_curves, style

    x = np.arange(5.0)
    drawn_ = [("A", x, np.ones(5)), ("B", x, 2 * np.ones(5))]
    assert style.coincident(drawn_, x, 2 * np.ones(5)) == "B"
    assert style.coincident(drawn_, x, 1.005 * np.ones(5)) is None
    assert style.coincident(drawn_, x, 1.005 * np.ones(5), rtol=0.01) == "A"
    assert style.coincident(drawn_, x[:4], np.ones(4)) is None          # other steps: not the same curve
    folder = make_folder(tmp_path)
    legends, styles = {}, {}
    real = style.save

    def grab(fig, out_dir, stem):
        legends[stem] = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
        styles[stem] = {ln.get_label(): (ln.get_linewidth(), ln.get_zorder()) for ln in fig.axes[1].get_lines()}
        return real(fig, out_dir, stem)

    monkeypatch.setattr(style, "save", grab)
    fig_curves.draw(folder)
    labels = legends["curves_sst2"]
    same = [t for t in labels if "same" in t]
    assert len(same) == 1 and same[0].startswith(_method_label("zo-peft")), labels
    assert same[0].endswith("same loss and dev curves as MeZO")
    lw_on_top, z_on_top = styles["curves_sst2"][same[0]]
    lw_below, z_below = styles["curves_sst2"][_method_label("zo-full")]
    assert lw_on_top < lw_below and z_on_top > z_below


def _method_label(method):
    from hybridopt.methods import REGISTRY

    return REGISTRY[method].label


def test_a_diverging_loss_puts_the_loss_panel_on_a_log_scale(tmp_path, monkeypatch):
    from hybridopt.paper_figures import fig_curves, style

    folder = make_folder(tmp_path)
    scales = {}
    real = style.save
    monkeypatch.setattr(style, "save", lambda fig, d, stem: scales.setdefault(stem, fig.axes[0].get_yscale())
                        and real(fig, d, stem))
    for s in SEEDS:     # the 1e-4 hybrid's loss grows to ~50 nats (the study's 3e-4 runs went to ~26)
        path = folder / "runs" / "sst2" / "hybrid-lrx1e-4" / f"seed{s}" / "result.json"
        d = json.loads(path.read_text())
        d["train_loss_curve"] = [[st, 0.7 * math.exp(0.35 * st)] for st, _ in d["train_loss_curve"]]
        write_json(path, d)
    fig_curves.draw(folder)
    assert scales["curves_sst2"] == "log" and scales["curves_wsc"] == "linear"
