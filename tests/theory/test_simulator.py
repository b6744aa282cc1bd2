"""The reshuffling-SGD simulator (theory/simulator.py, sim_cli.py, sim_plots.py) on tiny instances."""
import json

import numpy as np
import pytest
import torch

from hybridopt.theory import sim_cli, simulator as S
from hybridopt.theory.families import DT

TINY = S._inst("A", dict(n=2, d_x=3, d_y=1, m=1, beta=0.5), start_seed=2, q=4, replicates=16)
#: n = 1 keeps the scaling points to a few hundred steps
SCAL = S._inst("A", dict(n=1, d_x=3, d_y=1, m=1, beta=0.5), start_seed=2, q=1, replicates=16)
#: the cheapest certified point found (T_req ≈ 2.4e4 at ε = ‖∇f(z₀)‖/2): at ε = 0.8‖∇f(z₀)‖
#: the theorem's η is 2.6× larger and T̂ is ~10² epochs
CERT = S._inst("A", dict(n=1, d_x=1, d_y=1, m=1, beta=0.0, sigma_y=1.0, sigma_x=1.0), start_seed=5, q=8,
               replicates=8)


def _tiny_sweep(points=3):
    return dict(p1=[dict(mode="scaling", instance=SCAL, points=points, top_factor=8, cap=2000),
                    dict(mode="certified", instance=CERT, points=1, eps_max_frac=0.8)],
                p2=[dict(instance=TINY, factor=1.0, mu=1e-3, T=30, label="caps of (S)")],
                p3=[dict(axis="q", label="q sweep", instances=[dict(SCAL, q=1), dict(SCAL, q=2)], top_factor=8,
                         cap=2000)])


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


def test_core_trajectory_is_spec_hybrid_rr():
    """y-steps are exact component-gradient steps, x-steps the central estimator with the core's
    own directions, both read z_{t,k} (Jacobi), and each epoch walks a permutation."""
    F, x0, y0, _ = S.build(S.Instance(**TINY))
    q, mu, ex, ey = 2, 1e-3, 1e-2, 2e-2
    out = S.trajectory(F, x0, y0, ex, ey, mu, q, T=2, replicates=3, seed=4)
    for t in range(2):
        for r in range(3):
            assert sorted(out["idx"][t, :, r].tolist()) == list(range(F.n))
        for k in range(F.n):
            i = out["idx"][t, k]
            x, y = out["x"][t, k], out["y"][t, k]
            u = out["u"](t, k)  # (q, R, d_x)
            fp, fm = F._f(i, x + mu * u, y), F._f(i, x - mu * u, y)
            ghat = (((fp - fm) / (2 * mu)).unsqueeze(-1) * u).mean(0)
            torch.testing.assert_close(out["x"][t, k + 1], x - ex * ghat, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(out["y"][t, k + 1], y - ey * F._grad(i, x, y)[1], rtol=1e-13, atol=1e-15)


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
    tasks = [t for t in S.plan("quick") + S.plan("full") if t["kind"] in ("p1", "p3")]
    by_inst = {}
    for t in tasks:
        by_inst.setdefault(json.dumps(t["instance"], sort_keys=True), set()).add(t["s"])
    assert all(len(v) == 1 for v in by_inst.values())  # one s per instance: η ∝ ε² on the grid


def test_sweeps_meet_the_issue_sizes():
    """--quick: ≥ 4 ε spanning ≥ 4×, R ≥ 32, d_x ≥ 10⁴ somewhere; default: ≥ 8 ε (≥ 8×) on every
    family; certified on A and B with s = 1 (cheap: plans only, nothing is run)."""
    for mode, k, span in (("quick", 4, 4.0), ("full", 8, 8.0)):
        p1 = [t for t in S.plan(mode) if t["kind"] == "p1" and t["mode"] == "scaling"]
        fams = {S.Instance(**t["instance"]).family for t in p1}
        assert fams == ({"A", "B", "C"} if mode == "full" else fams)
        for f in fams:
            e = [t["eps"] for t in p1 if S.Instance(**t["instance"]).family == f]
            assert len(e) >= k and max(e) / min(e) >= span * (1 - 1e-9)
        assert all(S.Instance(**t["instance"]).replicates >= 32 for t in p1)
        assert max(S.build(S.Instance(**t["instance"]))[3]["d_x"] for t in p1) >= 10_000
    cert = [t for t in S.plan("certified")]
    assert {S.Instance(**t["instance"]).family for t in cert} >= {"A", "B"}
    assert all(t["s"] == 1.0 and t["mode"] == "certified" for t in cert)


def test_known_behaviour_slope_sign_and_certified_bound():
    F, x0, y0, c = S.build(S.Instance(**SCAL))
    s = S.choose_s(c, c["grad0"] / 2, 8)
    res = [S.run_task(dict(kind="p1", mode="scaling", instance=SCAL, eps=c["grad0"] / 2 * 2 ** (-j / 2), s=s,
                           cap=2000)) for j in range(3)]
    T = [r["epochs_mean_curve"] for r in res]
    assert all(t is not None for t in T) and T[0] < T[1] < T[2]  # fewer epochs for larger ε
    assert all(r["in_fit_regime"] == (r["regime"] == -4) for r in res)  # fit only on the κ₂ branch
    sl = sim_cli.slopes(res)[0]["epochs"]["slope"]
    assert sl < -1.5
    Fc, _, _, cc = S.build(S.Instance(**CERT))
    eps = 0.8 * cc["grad0"]
    assert eps <= cc["G"]
    cert = S.run_task(dict(kind="p1", mode="certified", instance=CERT, eps=eps, s=1.0, cap=None))
    assert cert["regime"] == -4 and cert["s"] == 1.0  # the theorem's η(ε), μ(ε) literally
    assert cert["holds"] and cert["epochs_ci"][1] <= cert["epochs_bound"]
    assert cert["monitor"]["ok"]


def test_json_well_formed_and_plots_from_json_alone(tmp_path, monkeypatch):
    monkeypatch.setitem(S.SWEEPS, "quick", _tiny_sweep())
    assert sim_cli.main(["--quick", "--out", str(tmp_path), "--workers", "1", "--no-progress"]) == 0
    d = json.loads((tmp_path / "simulation.json").read_text())
    for key in ("runs", "slopes", "bound_holds_fraction", "looseness", "constants", "tight_constant", "timing"):
        assert key in d
    for r in d["runs"]:
        for key in ("family", "mode", "eps", "epochs_measured", "epochs_bound", "censored", "holds"):
            assert key in r
        assert r["mode"] in ("certified", "scaling")
        assert (r["holds"] is None) == (r["mode"] == "scaling")
    c = next(iter(d["constants"].values()))
    for key in ("L_x0", "L_x1", "L_y0", "L_y1", "L_xy0", "L_xy1", "G", "n", "d_x", "q", "omega", "Delta", "C"):
        assert key in c
    assert d["bound_holds_fraction"] == 1.0
    for s in d["slopes"]:
        assert {"family", "mode", "epochs", "eps_range"} <= set(s)
    assert d["p3"]["fits"][0]["axis"] == "q" and len(d["p3"]["points"]) == 2
    assert d["timing"]["task_cpu_s"] > 0
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert {"P1_familyA.png", "P2_fixed_steps.png", "P3_dimension_q.png", "P4_monitor.png"} <= set(pngs)
    for p in tmp_path.glob("*.p*"):
        p.unlink()
    # figures from the JSON alone: the simulator must not be called again
    monkeypatch.setattr(S, "run_task", lambda *a, **k: pytest.fail("--plots-only re-ran the simulation"))
    assert sim_cli.main(["--plots-only", "--out", str(tmp_path)]) == 0
    assert {"P1_familyA.png", "P2_fixed_steps.png", "P3_dimension_q.png", "P4_monitor.png"} <= {
        p.name for p in tmp_path.glob("*.png")}
    assert len(list(tmp_path.glob("*.pdf"))) == len(list(tmp_path.glob("*.png")))
