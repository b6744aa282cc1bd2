"""A user's own objective (theory/objective.py) and the shipped example (theory/logistic.py): the protocol's checks,
the example's hand-certified constants on concrete points, the autograd measurement, and
``hybridopt simulate --objective module:factory`` end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stats import det_le
from hybridopt.theory import objective as O, sim_cli, simulator as S
from hybridopt.theory.assumptions import spectral_norm
from hybridopt.theory.families import make_family
from hybridopt.theory.logistic import TwoBlockLogistic

LOGI = "hybridopt.theory.logistic:make"
#: a cheap ZO-dominant logistic instance: T_req = 165 epochs at eps = 0.95 ||grad f(z0)|| (Rademacher, q = 8)
CHEAP = dict(n=1, d_x=1, d_y=1, m=1, scale_x=3.0, scale_y=0.3, start_scale=0.5)


def test_protocol_and_load():
    obj = O.load(LOGI, seed=3, n=2, d_x=4)
    assert isinstance(obj, O.Objective) and isinstance(make_family("D", 0), O.Objective)
    c = O.check_constants(obj)
    assert set(O.CONSTANT_KEYS) <= set(c) and (c["n"], c["d_x"], c["d_y"]) == (2, 4, 2)
    with pytest.raises(ValueError, match="module:factory"):
        O.load("hybridopt.theory.logistic")
    with pytest.raises(ValueError, match="no callable"):
        O.load("hybridopt.theory.logistic:nope")

    class Bad:
        name, n, d_x, d_y = "bad", 1, 1, 1

        def loss(self, i, x, y):
            return (x * x).sum(-1) + (y * y).sum(-1)

        def constants(self):
            return dict(L_x0=2.0, L_x1=0.0, L_y0=2.0, L_y1=0.0, L_xy0=0.0, G=1.0)     # L_xy1 missing

        def start(self, seed=0):
            return torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)

    with pytest.raises(KeyError, match="L_xy1"):
        O.check_constants(Bad())
    b = Bad()
    b.constants = lambda: dict(L_x0=2.0, L_x1=0.0, L_y0=2.0, L_y1=0.0, L_xy0=0.0, L_xy1=0.0, G=-1.0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        O.check_constants(b)


def test_build_rejects_a_G_below_the_start_gradient(monkeypatch):
    """A3 implies ‖∇f(z₀)‖ ≤ G: a certificate that contradicts it at the start is refused before any run."""
    real = TwoBlockLogistic.constants
    monkeypatch.setattr(TwoBlockLogistic, "constants", lambda self: dict(real(self), G=1e-6))
    S._CACHE.clear()
    try:
        with pytest.raises(ValueError, match="exceeds the certified G"):
            S.build(S.Instance(**S._inst(LOGI, dict(n=2))))
    finally:
        S._CACHE.clear()


@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(-2, 1.5), dims=st.tuples(st.integers(1, 4), st.integers(1, 6),
                                                                                st.integers(1, 3), st.integers(1, 6)))
@settings(max_examples=10)
def test_logistic_constants_hold(seed, scale, dims):
    """The example's hand-certified constants on concrete points (x, y of any size: A3(ii) with 𝒴 = R^{d_y}):
    HGS for each block by autograd Hessians, ‖∇f_i‖ ≤ G, f_i ≥ 0."""
    n, d_x, d_y, m = dims
    obj = TwoBlockLogistic(seed=seed % 1000, n=n, d_x=d_x, d_y=d_y, m=m)
    c = obj.constants()
    rng = np.random.default_rng(seed)
    for i in range(n):
        x = torch.tensor(rng.standard_normal(d_x) * 10**scale, dtype=torch.float64)
        y = torch.tensor(rng.standard_normal(d_y) * 10**scale, dtype=torch.float64)
        z = torch.cat([x, y])
        f = lambda v: obj.loss(torch.tensor(i), v[:d_x], v[d_x:])  # noqa: E731
        H = torch.autograd.functional.hessian(f, z)
        g = torch.autograd.functional.jacobian(f, z)
        gn = float(g.norm())
        for blk, Hb in (("x", H[:d_x, :d_x]), ("y", H[d_x:, d_x:]), ("xy", H[:d_x, d_x:])):
            assert det_le(float(spectral_norm(Hb)), c[f"L_{blk}0"] + c[f"L_{blk}1"] * gn), blk
        assert det_le(gn, c["G"]) and float(f(z)) >= 0


def test_value_and_grad_by_autograd_matches_closed_forms():
    """Without ``f``/``grad`` the simulator measures ∇f by autograd on the mean of ``loss``; on a family (which has
    closed forms) the two agree."""
    F = make_family("D", 1, n=3, d_x=5, d_y=2, m=2)

    class LossOnly:
        name, n, d_x, d_y = "D-loss-only", F.n, F.d_x, F.d_y
        loss, constants, start = F.loss, F.constants, F.start

    x = torch.randn(4, F.d_x, dtype=torch.float64)
    y = (torch.rand(4, F.d_y, dtype=torch.float64) - 0.5) * F.R_D
    f1, gx1, gy1 = O.value_and_grad(F, x, y)
    f2, gx2, gy2 = O.value_and_grad(LossOnly(), x, y)
    for a, b in ((f1, f2), (gx1, gx2), (gy1, gy2)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    gmax = O.component_grad_norms(F, x, y)
    assert torch.all(gmax <= F.gbar(y) * (1 + 1e-9))


def test_simulate_objective_cli_end_to_end(tmp_path):
    """``hybridopt simulate --objective hybridopt.theory.logistic:make``: a certified point run to 2·T_req under
    Rademacher directions (the theorem as stated: holds), and a fixed-step curve below B(T) of R6(A)."""
    argv = ["--objective", LOGI, "--law", "rademacher", "--points", "1", "--seeds", "1", "--eps-frac", "0.95",
            "--q", "8", "--replicates", "8", "--p2-epochs", "10", "--data-seed", "5", "--out", str(tmp_path),
            "--workers", "1", "--no-progress"] + sum((["--param", f"{k}={v}"] for k, v in CHEAP.items()), [])
    assert sim_cli.main(argv) == 0
    d = json.loads((tmp_path / "simulation.json").read_text())
    assert d["objective"] == LOGI and d["families"] == ["logistic"]
    (cert,) = [r for r in d["runs"] if r["mode"] == "certified"]
    assert cert["law"] == "rademacher" and cert["holds"] and cert["window"]["end"] >= 2 * cert["epochs_bound"]
    assert cert["epochs_bound"] <= 200 and not cert["monitor"]["has_gbar"]
    assert len(d["p2"]) == 9 and all(r["below_bound"] and r["max_ratio"] < 1 for r in d["p2"])
    assert d["bound_holds_fraction"] == 1.0
    assert (tmp_path / "P1_familylogistic.png").exists() and (tmp_path / "P2_fixed_steps.png").exists()
    assert math.isfinite(d["timing"]["task_cpu_s"])
    # a factory that cannot be found is a usage error (exit 2), not a traceback
    assert sim_cli.main(["--objective", "no_such_module_xyz:make", "--out", str(tmp_path), "--no-progress"]) == 2
