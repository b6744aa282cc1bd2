"""T1 (HGS on families A–D), T9 (box/ball invariance), T10 (A3 monitor) — spec §5."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridopt.theory.assumptions import A1, A3_II, HGS, HGS_Y, MONITOR, Inequality, Report
from hybridopt.theory.families import DT, make_family
from hybridopt.theory.simulator import trajectory

try:
    from strategies import BOXED, FAMS, box, instances
except ImportError:  # pragma: no cover - package-style import
    from tests.theory.strategies import BOXED, FAMS, box, instances



def _points(F, rng, R=16):
    """R points: N(0, σ_z²) entries, σ_z = 10^U[−2,1] per point; B, D: |y_l| ≤ 20; C: y uniform-radius in the ball."""
    sz = 10 ** rng.uniform(-2, 1, (R, 1))
    x = torch.tensor(rng.standard_normal((R, F.d_x)) * sz, dtype=DT)
    y = torch.tensor(rng.standard_normal((R, F.d_y)) * sz, dtype=DT)
    if F.name in BOXED:
        y = y.clamp(-20, 20)
    if F.name == "C":
        y = y / y.norm(dim=-1, keepdim=True) * F.R_C * torch.tensor(rng.uniform(0, 1, (R, 1)), dtype=DT)
    return x, y


def _domain_points(F, rng, R=16):
    """Points of the cylinder 𝒞 = R^{d_x} × 𝒴, x with huge entries allowed (A3 is x-uniform)."""
    x = torch.tensor(rng.standard_normal((R, F.d_x)) * 10 ** rng.uniform(-2, 6, (R, 1)), dtype=DT)
    if F.name == "A":
        y = torch.tensor(rng.standard_normal((R, F.d_y)) * 10 ** rng.uniform(-2, 3, (R, 1)), dtype=DT)
    elif F.name in BOXED:
        y = torch.tensor(rng.uniform(-1, 1, (R, F.d_y)), dtype=DT) * box(F)
        y[0] = box(F)  # a corner of the box (worst case of G_B, G_D)
    else:
        y = torch.tensor(rng.standard_normal((R, F.d_y)), dtype=DT)
        y = y / y.norm(dim=-1, keepdim=True) * F.R_C * torch.tensor(rng.uniform(0, 1, (R, 1)), dtype=DT) ** 0.5
        y[0] = y[0] / y[0].norm() * F.R_C * (1 - 1e-12)
    return x, y


# ----------------------------------------------------------------------------------------- T1


@given(inst=instances(), data=st.data())
def test_T1_hgs_on_families(inst, data):
    """T1: the three HGS inequalities (Def. 1.1) with the certified constants, at 16 random points.

    A and B globally (Lemmas 4.1, 4.2); C on its cylinder only (Lemma 4.4).  Also A1 (f_i ≥ 0).
    """
    F, seed = inst
    rng = np.random.default_rng(seed)
    i = data.draw(st.integers(0, F.n - 1))
    x, y = _points(F, rng)
    c = F.constants()
    rep = HGS.check(F, i, x, y, c)
    assert rep.holds, str(rep)
    assert A1.check(F, i, x, y, c).holds


@given(inst=instances(), data=st.data())
def test_T1_A3ii_and_monitor_on_cylinder(inst, data):
    """A3(ii) on 𝒞 (y ∈ 𝒴, ‖∇f_i‖ ≤ G, HGS) and the monitor ‖∇f_i(x,y)‖ ≤ Ḡ(y) ≤ G, x arbitrary."""
    F, seed = inst
    rng = np.random.default_rng(seed + 1)
    i = data.draw(st.integers(0, F.n - 1))
    x, y = _domain_points(F, rng)
    c = F.constants()
    rep = A3_II.check(F, i, x, y, c)
    assert rep.holds, str(rep)
    mon = MONITOR.check(F, i, x, y, c)
    assert mon.holds, str(mon)


@pytest.mark.parametrize("tau", [5.0, 10.0, 15.0])
def test_T1_family_B_not_globally_smooth(tau):
    """Witness (spec §4): λ_max ∇²_yy f_i(x, o_i + τe₁) ≥ θ cosh τ → ∞, while HGS still holds there."""
    F = make_family("B", 3, n=4, d_x=10, d_y=3, m=2)
    for i in range(F.n):
        y = F.o[i].clone()
        y[0] += tau
        x = torch.zeros(F.d_x, dtype=DT)
        _, _, Hyy = F.hessian_blocks(i, x, y)
        lam = torch.linalg.eigvalsh(Hyy)[-1].item()
        assert lam >= F.theta * math.cosh(tau) * (1 - 1e-12)
        assert lam > F.constants()["L_y0"]  # L_{y,0} alone fails: the L_{y,1}‖∇f‖ term carries it
        assert HGS.check(F, i, x, y, F.constants()).holds


def test_T1_checks_can_fail():
    """Negative controls: C outside its ball violates its local HGS; B with L_{y,1} = 0 fails; E1 is tight."""
    C = make_family("C", 0, n=2, p1=3, p2=3, r=1, m=2)
    y = torch.ones(C.d_y, dtype=DT)
    y *= 5 * C.R_C / y.norm()
    rep = HGS_Y.check(C, 0, torch.zeros(C.d_x, dtype=DT), y, C.constants())
    assert not rep.holds and rep.items[0].ratio > 1
    assert not A3_II.check(C, 0, torch.zeros(C.d_x, dtype=DT), y, C.constants()).holds
    B = make_family("B", 1, n=2, d_x=4, d_y=2, m=2)
    yb = B.o[0] + torch.tensor([8.0, 0.0], dtype=DT)
    c = dict(B.constants(), L_y1=0.0)
    assert not HGS.check(B, 0, torch.zeros(4, dtype=DT), yb, c).holds
    # E1 of spec §4: f = e^{y_1}; ‖∇²_yy f‖ = ‖∇f‖ = e^{y_1}: ratio 1 with (L_y0, L_y1) = (0, 1).
    e1 = {"hessian_blocks": lambda i, x, y: (torch.zeros(1, 1, dtype=DT), torch.zeros(1, 1, dtype=DT),
                                              torch.exp(y).reshape(1, 1)),
          "grad": lambda i, x, y: (torch.zeros(1, dtype=DT), torch.exp(y))}
    cE = dict(L_x0=0, L_x1=0, L_y0=0, L_y1=1, L_xy0=0, L_xy1=0, G=1)
    rep = HGS.check(e1, 0, torch.zeros(1, dtype=DT), torch.tensor([2.5], dtype=DT), cE)
    assert rep.holds and abs(rep["HGS-y"].ratio - 1) < 1e-12
    assert not HGS.check(e1, 0, torch.zeros(1, dtype=DT), torch.tensor([2.5], dtype=DT), dict(cE, L_y1=0.99)).holds
    assert isinstance(rep, Report) and isinstance(rep.items[0], Inequality)
    with pytest.raises(KeyError):
        rep["nope"]


# ----------------------------------------------------------------------------------------- T9


def _adversarial_y_run(F, y0, eta_y, steps, seed, greedy=True, verify=3):
    """`steps` y-steps y ← y − η_y ∇_y f_i(x_k, y), i cycling over reshuffled epochs, x_k adversarial.

    ∇_y f_i depends on x only through ψ'(·) ∈ (−1, 1) of the x-dependent arguments (B: τ = ψ'(v);
    C: t_k = ψ'(e_k); D: the gate w(v) = 1 + β tanh v ∈ (1 − β, 1 + β)).  ``greedy=False``: x_k has i.i.d.
    entries U[−1e6, 1e6] and τ, t, w are computed from it.  ``greedy=True``: τ, t are chosen directly in
    {−1, +1} to push y outward (B: along the coordinate of largest |y_l|; C: t_k = −sign⟨y, ∂_y e_k⟩; D: the
    largest gate w = 1 + β, the longest step), which dominates every x-sequence.
    numpy loop for speed; the first ``verify`` steps are cross-checked against ``F.grad_i``.
    Returns per replicate the max over steps of ‖y‖_∞/R_B (B), ‖y‖_∞/R_D (D) or ‖y‖/R_C (C).
    """
    rng = np.random.default_rng(seed)
    y = y0.numpy().copy()
    R = y.shape[0]
    pos = (lambda v: np.abs(v).max(-1) / box(F)) if F.name in BOXED else (lambda v: np.linalg.norm(v, axis=-1) / F.R_C)
    worst = pos(y)
    rows = np.arange(R)
    if F.name == "B":
        a, b, s_, o = F.a.numpy(), F.b.numpy(), F.s.numpy(), F.o.numpy()
        kap, th = F.kappa, F.theta
    elif F.name == "D":
        a, s_, o = F.a.numpy(), F.s.numpy(), F.o.numpy()
    else:
        al, ga, tau, lam = F.alpha.numpy(), F.gamma.numpy(), F.tau.numpy(), F.lam
        p1, p2, r, m = F.p1, F.p2, F.r, F.m
    perm = rng.permutation(F.n)
    for step in range(steps):
        k = step % F.n
        if k == 0:
            perm = rng.permutation(F.n)
        i = perm[k]
        x = None if greedy else rng.uniform(-1e6, 1e6, (R, F.d_x))
        if F.name == "B":
            if greedy:
                lmax = np.abs(y).argmax(-1)
                tv = -np.sign(b[i, lmax] * y[rows, lmax])
                tv[tv == 0] = 1.0
            else:
                tv = np.tanh(x @ a[i] + y @ b[i] - s_[i])
            gy = kap * tv[:, None] * b[i] + th * np.sinh(y - o[i])
        elif F.name == "D":
            wv = np.full(R, 1.0 + F.beta) if greedy else 1.0 + F.beta * np.tanh(x @ a[i] - s_[i])
            gy = F.theta * wv[:, None] * np.sinh(y - o[i])
        else:
            Bm = y[:, : p1 * r].reshape(R, p1, r)
            Am = y[:, p1 * r:].reshape(R, r, p2)
            dB = al[i][None, :, :, None] * np.einsum("rcq,kq->rkc", Am, ga[i])[:, :, None, :]  # (R,m,p1,r)
            dA = np.einsum("rpc,kp->rkc", Bm, al[i])[:, :, :, None] * ga[i][None, :, None, :]  # (R,m,r,p2)
            de = np.concatenate([dB.reshape(R, m, -1), dA.reshape(R, m, -1)], -1)  # ∂_y e_k
            if greedy:
                t = -np.sign(np.einsum("rkd,rd->rk", de, y))
                t[t == 0] = 1.0
            else:
                W = x.reshape(R, p1, p2)
                e = np.einsum("kp,rpq,kq->rk", al[i], W + Bm @ Am, ga[i]) - tau[i]
                t = np.tanh(e)
            gy = np.einsum("rk,rkd->rd", t, de) / m + lam * (y * y).sum(-1, keepdims=True) * y
        if x is not None and step < verify:
            want = F.grad_i(int(i), torch.tensor(x), torch.tensor(y))[1].numpy()
            assert np.allclose(gy, want, rtol=1e-12, atol=1e-12)
        y = y - eta_y * gy
        if not np.isfinite(y).all():
            return np.full(R, np.inf)
        worst = np.maximum(worst, pos(y))
    return worst


def _boundary_starts(F, rng, R=8):
    if F.name in BOXED:
        y = torch.tensor(rng.uniform(-1, 1, (R, F.d_y)), dtype=DT) * box(F)
        lane = torch.tensor(rng.integers(0, F.d_y, R))
        y[torch.arange(R), lane] = torch.tensor(rng.choice([-1.0, 1.0], R), dtype=DT) * box(F)
        y[0] = box(F)
        y[1] = -box(F)
        return y
    y = torch.tensor(rng.standard_normal((R, F.d_y)), dtype=DT)
    return y / y.norm(dim=-1, keepdim=True) * F.R_C


@given(name=st.sampled_from(("B", "C", "D")), seed=st.integers(0, 2**31 - 1), greedy=st.booleans())
@settings(max_examples=6)
def test_T9_invariance_under_adversarial_x(name, seed, greedy):
    """T9: Lemma 4.3 box / Lemma 4.4 ball / Lemma D box stay invariant for 10⁴ y-steps at the step cap, y₀ on the
    boundary."""
    rng = np.random.default_rng(seed)
    if name in BOXED:
        F = make_family(name, seed, n=int(rng.integers(1, 9)), d_x=int(rng.integers(2, 20)),
                        d_y=int(rng.integers(1, 7)), m=int(rng.integers(1, 7)))
    else:
        F = make_family("C", seed, n=int(rng.integers(1, 9)), p1=int(rng.integers(2, 7)),
                        p2=int(rng.integers(2, 7)), r=int(rng.integers(1, 3)), m=int(rng.integers(1, 7)))
    y0 = _boundary_starts(F, rng)
    worst = _adversarial_y_run(F, y0, F.step_cap_y(), 10_000, seed, greedy)
    assert float(worst.max()) <= 1.0 + 1e-12, float(worst.max())
    assert float(worst.max()) >= 1.0 - 1e-12  # started on the boundary


@pytest.mark.parametrize("name", ["C", "D"])
def test_T9_negative_control_escapes_with_10x_step(name):
    """With 10× the step cap (C: η_y = 10/(18 c_C); D: 10/(θ w_max cosh(R_D + o_max))) the invariant set is left
    (the cap is not vacuous)."""
    for seed in range(3):
        F = (make_family("C", seed, n=3, p1=4, p2=3, r=2, m=2) if name == "C"
             else make_family("D", seed, n=3, d_x=4, d_y=2, m=2))
        y0 = _boundary_starts(F, np.random.default_rng(seed), R=4)
        worst = _adversarial_y_run(F, y0, 10 * F.step_cap_y(), 50, seed)
        assert float(worst.max()) > 1.0
        assert float(_adversarial_y_run(F, y0, F.step_cap_y(), 50, seed).max()) <= 1.0 + 1e-12


# ---------------------------------------------------------------------------------------- T10


@given(inst=instances(), run_seed=st.integers(0, 2**31 - 1))
@settings(max_examples=8)
def test_T10_monitor_along_trajectories(inst, run_seed):
    """T10: along HybridRR runs under (S) (and the y-cap), max_{t,k} Ḡ(y_{t,k}) ≤ G, y_{t,k} ∈ 𝒴,
    and ‖∇f_i(z_{t,k})‖ ≤ Ḡ(y_{t,k}) for every i."""
    F, _ = inst
    c = F.constants()
    G = c["G"]
    LX = c["L_x0"] + c["L_x1"] * G + c["L_xy0"] + c["L_xy1"] * G
    LY = c["L_y0"] + c["L_y1"] * G + c["L_xy0"] + c["L_xy1"] * G
    rng = np.random.default_rng(run_seed)
    eta_x = 1 / (6 * F.n * LX) * 10 ** rng.uniform(-1, 0)
    eta_y = min(1 / (4 * F.n * LY), F.step_cap_y()) * 10 ** rng.uniform(-1, 0)
    x0, y0 = F.default_start(run_seed % 1000)
    out = trajectory(F, x0, y0, eta_x, eta_y, 10 ** rng.uniform(-4, 0), int(rng.choice([1, 2, 4])),
                     T=6, replicates=4, seed=run_seed)
    ys, xs = out["y"], out["x"]
    gb = F.gbar(ys)
    assert float(gb.max()) <= G * (1 + 1e-9)
    assert F.in_domain(ys)
    for i in range(F.n):
        gx, gy = F.grad_i(i, xs, ys)
        gn = torch.sqrt((gx * gx).sum(-1) + (gy * gy).sum(-1))
        assert torch.all(gn <= gb * (1 + 1e-9) + 1e-12)
