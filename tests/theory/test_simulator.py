"""The reshuffling-SGD simulator (theory/simulator.py, sim_cli.py, sim_plots.py) on tiny instances.

One tiny sweep (scaling points on a ZO-dominant Family D instance, one certified point run to 2·T_req under
Rademacher directions, a fixed-step curve, a P3 pair) runs once per module through ``hybridopt simulate``'s
``main`` and is shared by the tests below; the certified point is also the clean half of mutation M14.
"""
import copy
import json
import math

import numpy as np
import pytest
import torch

from stats import Check
from hybridopt.theory import bound, sim_cli, simulator as S
from hybridopt.theory.families import DT

TINY = S._inst("A", dict(n=2, d_x=3, d_y=1, m=1, beta=0.5), start_seed=2, q=4, replicates=16)
#: ZO-dominant (x-block share ~0.9 at z0), n = 4: the scaling points take ~10^2 epochs each
SCAL = S._inst("D", dict(n=4, d_x=4, d_y=1, m=2, start_scale=1.0, beta=0.3, a_scale=0.5, theta=0.1), replicates=16)
#: the sweeps' certified Family D instance under Rademacher directions: T_req = 326 epochs at eps = 0.95 ||grad f(z0)||
CERT = S._inst("D", dict(n=1, d_x=1, d_y=1, m=1, sigma_x=2.0, theta=0.02, beta=0.3, a_scale=0.5, delta=0.25,
                         start_scale=0.5), data_seed=4, start_seed=3, q=8, law="rademacher", replicates=8)
CERT_FRAC = 0.95
P3 = S._inst("A", dict(n=1, d_x=3, d_y=1, m=1, beta=0.5), start_seed=2, replicates=16)


def _tiny_sweep(points=3):
    return dict(p1=[dict(mode="scaling", instance=SCAL, points=points, top_factor=4, cap=3000),
                    dict(mode="certified", instance=CERT, points=1, seeds=1, eps_max_frac=CERT_FRAC)],
                p2=[dict(instance=TINY, factor=1.0, mu=1e-3, T=30, label="caps of (S)")],
                p3=[dict(axis="q", label="q sweep", instances=[dict(P3, q=1), dict(P3, q=2)], top_factor=8, cap=2000)])


#: certified runs of CERT by coefficient table: the point costs ~10^4 probe evaluations, and the sweep fixture and
#: the clean half of M14 (test_mutations.py) need the same one
_CERT_RUNS: dict = {}
#: the simulator's own run_task (the sweep fixture patches S.run_task to route its certified task here)
_RUN_TASK = S.run_task


def _certified_point(task: dict | None = None) -> dict:
    """The certified run of CERT at eps = 0.95 ||grad f(z0)|| under the current coefficient table (run once per
    table)."""
    key = bound._coeff_key()
    if key not in _CERT_RUNS:
        if task is None:
            c = S.build(S.Instance(**CERT))[3]
            task = dict(kind="p1", mode="certified", instance=dict(CERT, run_seed=0), eps=CERT_FRAC * c["grad0"],
                        s=1.0, cap=None)
        _CERT_RUNS[key] = _RUN_TASK(task)
    return copy.deepcopy(_CERT_RUNS[key])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    run = S.run_task
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(S.SWEEPS, "quick", _tiny_sweep())
        # the sweep's one certified task is _certified_point's (same instance, seed and eps): run it once
        mp.setattr(S, "run_task", lambda t: _certified_point(t) if t.get("mode") == "certified" else run(t))
        assert sim_cli.main(["--quick", "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    return out, json.loads((out / "simulation.json").read_text())


def certified_mutation_checks() -> list:
    """The theorem as stated on Family D: max_{T_req ≤ T ≤ 2 T_req} Ā_T ≤ ε² (M14's and M17's check: with T_req 100×
    too small the window starts before the running average has crossed ε²; with μ(ε) 1000× too large the x-block
    barely descends and the running average never crosses ε²)."""
    r = _certified_point()
    w = r["window"]
    return [Check(bool(r["holds"]), w["max_mean"], r["eps"] ** 2, f"certified window [{w['start']}, {w['end']}]: "
                  f"max mean running average / eps^2 = {w['ratio']:.3g}"),
            Check(bool(r["monitor"]["ok"]), 0.0, 0.0, "A3 monitor along the run")]


def test_measurement_is_the_closed_form_at_the_iterate():
    F, x0, y0, c = S.build(S.Instance(**TINY))
    seen = []
    out = S.hybrid_run(F, x0, y0, 1e-2, 1e-2, 1e-3, 2, 5, seed=1, epochs=3, record=True,
                       on_epoch=lambda t, m: seen.append(m))
    assert len(seen) == 4 and out["x"].shape == (3, F.n + 1, 5, F.d_x)
    for t in range(3):
        x, y = out["x"][t, 0], out["y"][t, 0]
        gx, gy = F.grad(x, y)
        np.testing.assert_allclose(seen[t]["gx2"], (gx * gx).sum(-1).numpy(), rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(seen[t]["gy2"], (gy * gy).sum(-1).numpy(), rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(seen[t]["f"], F.f(x, y).numpy(), rtol=1e-13)
    # the epoch end is the next epoch start
    assert torch.equal(out["x"][0, F.n], out["x"][1, 0])


@pytest.mark.parametrize("law", ["gaussian", "rademacher"])
def test_core_trajectory_is_spec_hybrid_rr(law):
    """y-steps are exact component-gradient steps, x-steps the central estimator with the core's
    own directions (±1 entries under the Rademacher law), both read z_{t,k} (Jacobi), and each epoch walks a
    permutation."""
    F, x0, y0, _ = S.build(S.Instance(**TINY))
    q, mu, ex, ey = 2, 1e-3, 1e-2, 2e-2
    out = S.trajectory(F, x0, y0, ex, ey, mu, q, T=2, replicates=3, seed=4, law=law)
    for t in range(2):
        for r in range(3):
            assert sorted(out["idx"][t, :, r].tolist()) == list(range(F.n))
        for k in range(F.n):
            i = out["idx"][t, k]
            x, y = out["x"][t, k], out["y"][t, k]
            u = out["u"](t, k)  # (q, R, d_x)
            if law == "rademacher":
                assert torch.equal(u.abs(), torch.ones_like(u))
            fp, fm = F._f(i, x + mu * u, y), F._f(i, x - mu * u, y)
            ghat = (((fp - fm) / (2 * mu)).unsqueeze(-1) * u).mean(0)
            torch.testing.assert_close(out["x"][t, k + 1], x - ex * ghat, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(out["y"][t, k + 1], y - ey * F._grad(i, x, y)[1], rtol=1e-13, atol=1e-15)


def test_rescaled_run_is_hybrid_rr_with_scaled_steps():
    """:class:`theory.simulator.Rescaled` (the certified grids' batching) is exact: replicate r of one core run
    with scale c_r follows HybridRR on F with steps (η_x c_r², η_y c_r²) and radius μ c_r, the core's own
    directions, and reports F's coordinates."""
    F, x0, y0, _ = S.build(S.Instance(**TINY))
    c = torch.tensor([1.0, 0.5, 2.0], dtype=DT)
    q, mu, ex, ey = 2, 1e-2, 1e-2, 2e-2
    out = S.hybrid_run(F, x0, y0, ex, ey, mu, q, 3, seed=7, epochs=2, record=True, monitor=False, scale=c)
    opt = out["optimizer"]
    assert torch.allclose(out["x"][0, 0], x0.expand(3, -1), rtol=1e-15) and torch.allclose(out["y"][0, 0], y0.expand(3, -1))
    cc = c[:, None]
    for t in range(2):
        for k in range(F.n):
            d = opt.directions(t * F.n + k)
            u = torch.stack([d.u(j, 0) for j in range(q)])            # (q, R, d_x): the same u for x̃ and x
            i = out["idx"][t, k]
            x, y = out["x"][t, k], out["y"][t, k]
            fp, fm = F._f(i, x + mu * cc * u, y), F._f(i, x - mu * cc * u, y)
            ghat = (((fp - fm) / (2 * mu * c)).unsqueeze(-1) * u).mean(0)  # F's estimate at radius mu c_r
            torch.testing.assert_close(out["x"][t, k + 1], x - ex * cc**2 * ghat, rtol=1e-11, atol=1e-13)
            torch.testing.assert_close(out["y"][t, k + 1], y - ey * cc**2 * F._grad(i, x, y)[1], rtol=1e-11,
                                       atol=1e-13)


def test_common_random_numbers_across_eps():
    """Two ε of one instance: identical permutations and identical directions (the x-increments
    are parallel, q = 1), only the step sizes differ."""
    inst = S.Instance(**dict(TINY, q=1))
    F, x0, y0, c = S.build(inst)
    runs = []
    for eps in (c["grad0"] / 2, c["grad0"] / 4):
        sch = S.schedule(c, eps, 100.0)
        runs.append(S.hybrid_run(F, x0, y0, sch["eta_x"], sch["eta_y"], sch["mu"], 1, 4, seed=inst.run_seed,
                                 epochs=2, record=True))
    assert torch.equal(runs[0]["idx"], runs[1]["idx"])
    a = runs[0]["x"][0, 1] - runs[0]["x"][0, 0]
    b = runs[1]["x"][0, 1] - runs[1]["x"][0, 0]
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    np.testing.assert_allclose(cos.abs().numpy(), 1.0, rtol=0, atol=1e-12)
    # and the plan really gives every ε the same seeds, start and instance
    tasks = [t for t in S.plan("quick") + S.plan("full") if t["kind"] == "p1" and t["mode"] == "scaling"]
    by_inst = {}
    for t in tasks:
        by_inst.setdefault(json.dumps(t["instance"], sort_keys=True), set()).add(t["s"])
    assert all(len(v) == 1 for v in by_inst.values())  # one s per instance: η ∝ ε² on the grid


def test_sweeps_meet_the_issue_sizes():
    """Issue #15 as data (plans only, nothing is run): the default sweep's slope instances are ZO-dominant
    Family D (L_x1, L_xy1 > 0) with n ≥ 4, R ≥ 32, both direction laws, ≥ 6 ε spanning ≥ 8×; certified mode covers
    ≥ 3 families (D among them) with ≥ 6 ε and ≥ 3 seeds each, every run to ≥ 2·T_req, D under both laws."""
    full = S.plan("full")
    scal = [t for t in full if t["kind"] == "p1" and t["mode"] == "scaling"]
    laws = {S.Instance(**t["instance"]).law for t in scal}
    assert laws == {"gaussian", "rademacher"}
    for law in laws:
        pts = [t for t in scal if S.Instance(**t["instance"]).law == law]
        inst = S.Instance(**pts[0]["instance"])
        c = S.build(inst)[3]
        e = [t["eps"] for t in pts]
        assert inst.family == "D" and c["n"] >= 4 and inst.replicates >= 32 and c["L_x1"] > 0 and c["L_xy1"] > 0
        assert len(e) >= 6 and max(e) / min(e) >= 8 * (1 - 1e-9)
        assert c["grad0_x"] ** 2 >= 0.5 * c["grad0"] ** 2            # ZO-dominant at z0 (and along the run: JSON)
    cert = [t for t in full if t.get("mode") == "certified"]
    fams = {}
    for t in cert:
        inst = S.Instance(**t["instance"])
        eps = t["eps"] if isinstance(t["eps"], list) else [t["eps"]]
        f = fams.setdefault((inst.family, inst.law), dict(eps=set(), seeds=set()))
        f["eps"] |= {round(e, 12) for e in eps}
        f["seeds"].add(inst.run_seed)
        assert t["s"] == 1.0 and (t.get("hold_multiple") or S.HOLD_MULTIPLE) >= 2
    gauss = {f for f, law in fams if law == "gaussian"}
    assert len(gauss) >= 3 and "D" in gauss and ("D", "rademacher") in fams
    assert all(len(v["eps"]) >= 6 and len(v["seeds"]) >= 3 for v in fams.values())


def test_parts_select_the_sweep_tasks():
    """``--parts`` keeps exactly the tasks of the named parts of a plan (the full sweep's scaling slopes cost
    ~10⁶ steps per law, SIMULATOR.md, so the other parts must be runnable alone); an unknown part is an error."""
    full = S.plan("full")
    got = {p: sim_cli.select_parts(full, (p,)) for p in sim_cli.PARTS}
    assert sum(len(v) for v in got.values()) == len(full) and all(got.values())
    assert all(t["mode"] == "scaling" for t in got["scaling"]) and all(t["mode"] == "certified" for t in got["certified"])
    assert sim_cli.select_parts(full, None) == full
    assert sim_cli.select_parts(full, ("p2", "p3")) == got["p2"] + got["p3"]
    with pytest.raises(SystemExit):
        sim_cli._parser().parse_args(["--parts", "certified,bogus"])
    assert sim_cli._parser().parse_args(["--parts", "certified,p2"]).parts == ("certified", "p2")


def test_certified_window_and_T_req_mutation(sweep):
    """Certified mode checks the theorem as stated: the run continues to 2·T_req and max_{T_req ≤ T ≤ end} Ā_T is
    compared with ε² (holds here, by a wide margin); the same point with T_req 100× too small (M14) fails."""
    _, d = sweep
    (r,) = [r for r in d["runs"] if r["mode"] == "certified"]
    w = r["window"]
    assert r["law"] == "rademacher" and r["s"] == 1.0 and r["regime"] == -4 and r["S"]
    assert w["start"] == r["epochs_bound"] and w["end"] >= 2 * w["start"] and r["epochs_run"] >= 2 * w["start"]
    assert r["holds"] and w["max_mean"] <= r["eps"] ** 2 and 0 < w["ratio"] < 1
    assert r["epochs_mean_curve"] < r["epochs_bound"] and r["monitor"]["ok"]
    assert d["bound_holds_fraction"] == 1.0 and d["certified"]["failures"] == []
    # the direct run of the point (the clean half of M14) agrees with the sweep's
    assert certified_mutation_checks()[0]
    from hybridopt.theory import lemmas

    with lemmas.mutated("M14"):
        bad = certified_mutation_checks()
    assert bad[0].violated, bad


def test_known_behaviour_slope_sign_and_block_shares(sweep):
    _, d = sweep
    scal = sorted([r for r in d["runs"] if r["mode"] == "scaling"], key=lambda r: -r["eps"])
    T = [r["epochs_mean_curve"] for r in scal]
    assert all(t is not None for t in T) and T[0] < T[1] < T[2]  # fewer epochs for larger ε
    assert all(r["in_fit_regime"] == (r["regime"] == -4) for r in scal)  # fit only on the κ₂ branch
    (sl,) = [s for s in d["slopes"] if s["mode"] == "scaling"]
    assert sl["epochs"]["slope"] < -1.5 and sl["epochs"]["granularity"] > 0
    assert not sl["meets_fit_standard"]                    # 3 points spanning 2x: reported as not meeting it
    for r in d["runs"]:
        sh = r["block_share"]
        assert 0 <= sh["x"] <= 1 and math.isclose(sh["x"] + sh["y"], 1.0, rel_tol=1e-12)
    key = next(k for k in d["block_share"] if k.startswith("D(a_scale=0.5,beta=0.3,d_x=4"))
    assert d["block_share"][key]["x_mean"] > 0.5           # the ZO block carries most of ||grad f||^2


def test_granularity_and_fit_standard():
    """The ±1-epoch effect on a fitted slope, on a case with a known answer: T̂ = (10, 160) at ε = (1, 1/2) has
    slope −4, and moving the first point to 9 or 11 epochs changes it by log2(10/9) = 0.152."""
    e, T = np.array([1.0, 0.5]), np.array([10.0, 160.0])
    assert math.isclose(sim_cli._fit(e, T), -4.0, rel_tol=1e-12)
    assert math.isclose(sim_cli.granularity(e, T), math.log2(10 / 9), rel_tol=1e-9)
    assert sim_cli.FIT_STANDARD == dict(points=6, span=8.0, min_epochs=50)


def test_json_well_formed_and_plots_from_json_alone(sweep, tmp_path, monkeypatch, capsys):
    out, d = sweep
    assert sim_cli.main(["--markdown", "--out", str(out)]) == 0          # the result tables, nothing run
    md = capsys.readouterr().out
    assert "| D | gaussian | scaling |" in md and "Certified mode" in md and "1/1 runs hold" in md
    for key in ("runs", "slopes", "bound_holds_fraction", "certified", "looseness", "constants", "tight_constant",
                "block_share", "timing", "fit_standard"):
        assert key in d
    for r in d["runs"]:
        for key in ("family", "mode", "law", "eps", "epochs_measured", "epochs_bound", "censored", "holds", "window",
                    "block_share", "S_factor"):
            assert key in r
        assert r["mode"] in ("certified", "scaling")
        assert (r["holds"] is None) == (r["mode"] == "scaling") == (r["window"] is None)
    c = next(iter(d["constants"].values()))
    for key in ("L_x0", "L_x1", "L_y0", "L_y1", "L_xy0", "L_xy1", "G", "n", "d_x", "q", "omega", "Delta", "C",
                "C_rademacher", "kappa2_rademacher"):
        assert key in c
    for s in d["slopes"]:
        assert {"family", "mode", "law", "epochs", "eps_range", "meets_fit_standard", "min_epochs"} <= set(s)
    assert d["p3"]["fits"][0]["axis"] == "q" and len(d["p3"]["points"]) == 2
    assert d["p2"][0]["max_ratio"] < 1 and d["p2"][0]["below_bound"]
    assert d["timing"]["task_cpu_s"] > 0
    # the summary is a function of the runs: resummarize (``--resummarize``) recomputes it without running anything
    import shutil

    assert {"P1_familyD.png", "P2_fixed_steps.png", "P3_dimension_q.png", "P4_monitor.png"} <= {
        p.name for p in out.glob("*.png")}
    shutil.copy(out / "simulation.json", tmp_path / "simulation.json")
    monkeypatch.setattr(S, "run_task", lambda *a, **k: pytest.fail("the summary re-ran the simulation"))
    # figures from the JSON alone (--resummarize then draws them): the simulator must not be called again
    assert sim_cli.main(["--resummarize", "--out", str(tmp_path)]) == 0
    d2 = json.loads((tmp_path / "simulation.json").read_text())
    assert d2["slopes"] == d["slopes"] and d2["certified"] == d["certified"] and d2["block_share"] == d["block_share"]
    assert sim_cli.main(["--plots-only", "--out", str(tmp_path / "missing")]) == 2
    assert {"P1_familyD.png", "P2_fixed_steps.png", "P3_dimension_q.png", "P4_monitor.png"} <= {
        p.name for p in tmp_path.glob("*.png")}
    assert len(list(tmp_path.glob("*.pdf"))) == len(list(tmp_path.glob("*.png")))


def test_an_interrupted_sweep_continues_from_its_finished_tasks(sweep, tmp_path, monkeypatch):
    """``DIR/tasks/`` keeps each finished task: a rerun into the same DIR runs only the missing ones and gives the
    same summary as the uninterrupted sweep; ``--fresh`` runs everything; a task whose dict changed is rerun."""
    import shutil

    out, d = sweep
    files = sorted((out / "tasks").glob("*.json"))
    assert files                                                         # one file per finished task
    shutil.copytree(out / "tasks", tmp_path / "tasks")
    lost = tmp_path / "tasks" / next(f.name for f in files if f.name.startswith("p2-"))
    lost.unlink()                                                        # the task that was running when it stopped
    ran = []
    real = S.run_task
    monkeypatch.setitem(S.SWEEPS, "quick", _tiny_sweep())
    monkeypatch.setattr(S, "run_task", lambda t: ran.append(t["kind"]) or real(t))
    assert sim_cli.main(["--quick", "--out", str(tmp_path), "--workers", "1", "--no-progress"]) == 0
    assert ran == ["p2"] and lost.exists()
    d2 = json.loads((tmp_path / "simulation.json").read_text())

    def untimed(records):   # a rerun task's own timing differs; everything it measured does not
        return [{k: v for k, v in r.items() if k not in ("cpu_s", "wall_s")} for r in records]

    assert d2["slopes"] == d["slopes"] and d2["certified"] == d["certified"] and d2["block_share"] == d["block_share"]
    assert untimed(d2["p2"]) == untimed(d["p2"]) and d2["runs"] == d["runs"] and d2["p3"] == d["p3"]
    # a task dict that differs from the stored one is not served from the cache
    cache = sim_cli.TaskCache(tmp_path / "tasks")
    stored = json.loads(lost.read_text())["task"]
    assert cache.get(stored) is not None and cache.get(dict(stored, T=stored["T"] + 1)) is None
    ran.clear()
    monkeypatch.setattr(S, "run_task", lambda t: ran.append(t["kind"]) or (
        _certified_point(t) if t.get("mode") == "certified" else real(t)))
    assert sim_cli.main(["--quick", "--fresh", "--out", str(tmp_path), "--workers", "1", "--no-progress"]) == 0
    assert len(ran) == len(files)
