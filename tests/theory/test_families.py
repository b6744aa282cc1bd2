"""Families A–D (spec §4, FAMILIES.md): closed forms against autograd, quadrature, constants, core interface."""
from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridopt.theory.families import DT, FamilyA, FamilyB, FamilyC, gaussian_expectation, make_family

try:
    from strategies import BOXED, FAMS, instances
except ImportError:  # pragma: no cover - package-style import
    from tests.theory.strategies import BOXED, FAMS, instances



def random_point(F, rng, R=()):
    """Spec §5 point strategy: entries N(0, σ_z²), σ_z = 10^U[−2,1]; |y_l| ≤ 20 for B; C: y in the ball."""
    sz = 10 ** rng.uniform(-2, 1)
    x = torch.tensor(rng.standard_normal((*R, F.d_x)) * sz, dtype=DT)
    y = torch.tensor(rng.standard_normal((*R, F.d_y)) * sz, dtype=DT)
    if F.name in BOXED:
        y = y.clamp(-20, 20)
    if F.name == "C":
        y = y / y.norm(dim=-1, keepdim=True) * F.R_C * torch.tensor(rng.uniform(0, 1, (*R, 1)), dtype=DT)
    return x, y


def test_make_family_names_and_errors():
    for name in FAMS:
        F = make_family(name, 3)
        assert F.name == name and isinstance(F.n, int)
        c = F.constants()
        assert set(c) >= {"L_x0", "L_x1", "L_y0", "L_y1", "L_xy0", "L_xy1", "G", "n", "d_x", "d_y"}
        assert c["case"] == "ii" and (c["n"], c["d_x"], c["d_y"]) == (F.n, F.d_x, F.d_y)
        assert all(c[k] >= 0 for k in ("L_x0", "L_x1", "L_y0", "L_y1", "L_xy0", "L_xy1")) and c["G"] > 0
    with pytest.raises(ValueError, match="A, B, C, D"):
        make_family("E", 0)
    with pytest.raises(ValueError):
        make_family("C", 0, p1=3, p2=3, d_x=10)
    # same seed -> same data, different seed -> different data
    assert torch.equal(make_family("A", 5).P, make_family("A", 5).P)
    assert not torch.equal(make_family("A", 5).P, make_family("A", 6).P)
    assert isinstance(make_family("b", 0), FamilyB) and isinstance(make_family("c", 0), FamilyC)
    assert isinstance(make_family("A", 0), FamilyA)


@given(inst=instances(), data=st.data())
def test_closed_forms_match_autograd(inst, data):
    """∇f_i and the Hessian blocks (spec §4 'Derivatives') equal torch autograd of f_i."""
    F, seed = inst
    rng = np.random.default_rng(seed)
    i = data.draw(st.integers(0, F.n - 1))
    x, y = random_point(F, rng)
    z = torch.cat([x, y]).requires_grad_(True)
    fz = lambda v: F.f_i(i, v[: F.d_x], v[F.d_x:])  # noqa: E731
    g = torch.autograd.grad(fz(z), z)[0]
    gx, gy = F.grad_i(i, x, y)
    scale = 1.0 + g.abs().max().item()
    assert torch.allclose(torch.cat([gx, gy]), g, rtol=1e-10, atol=1e-12 * scale)
    H = torch.autograd.functional.hessian(fz, z.detach())
    Hxx, Hxy, Hyy = F.hessian_blocks(i, x, y)
    hs = 1.0 + H.abs().max().item()
    assert torch.allclose(Hxx, H[: F.d_x, : F.d_x], rtol=1e-10, atol=1e-12 * hs)
    assert torch.allclose(Hxy, H[: F.d_x, F.d_x:], rtol=1e-10, atol=1e-12 * hs)
    assert torch.allclose(Hyy, H[F.d_x:, F.d_x:], rtol=1e-10, atol=1e-12 * hs)
    assert float(F.f_i(i, x, y)) >= 0.0  # f_lb = 0


@given(inst=instances(max_dx=20))
def test_replicates_full_averages_and_batch_loss(inst):
    """Leading replicate dims, f = mean_i f_i, ∇f = mean_i ∇f_i, batch_loss with (b,) and (R, b)."""
    F, seed = inst
    rng = np.random.default_rng(seed + 1)
    R = 3
    X, Y = random_point(F, rng, R=(R,))
    i = int(rng.integers(F.n))
    fv, (gx, gy) = F.f_i(i, X, Y), F.grad_i(i, X, Y)
    Hb = F.hessian_blocks(i, X, Y)
    for r in range(R):
        assert torch.allclose(fv[r], F.f_i(i, X[r], Y[r]), rtol=1e-13, atol=1e-13)
        assert torch.allclose(gx[r], F.grad_i(i, X[r], Y[r])[0], rtol=1e-13, atol=1e-14)
        assert torch.allclose(gy[r], F.grad_i(i, X[r], Y[r])[1], rtol=1e-13, atol=1e-14)
        for A_, B_ in zip(Hb, F.hessian_blocks(i, X[r], Y[r])):
            assert torch.allclose(A_[r], B_, rtol=1e-12, atol=1e-13)
    fs = torch.stack([F.f_i(j, X, Y) for j in range(F.n)])
    assert torch.allclose(F.f(X, Y), fs.mean(0), rtol=1e-13, atol=1e-13)
    gxs = torch.stack([F.grad_i(j, X, Y)[0] for j in range(F.n)]).mean(0)
    gys = torch.stack([F.grad_i(j, X, Y)[1] for j in range(F.n)]).mean(0)
    GX, GY = F.grad(X, Y)
    assert torch.allclose(GX, gxs, rtol=1e-12, atol=1e-14) and torch.allclose(GY, gys, rtol=1e-12, atol=1e-14)
    batch = torch.tensor(rng.integers(0, F.n, 4))
    assert torch.allclose(F.batch_loss([X], [Y], batch), fs[batch].mean(0), rtol=1e-13, atol=1e-13)
    pb = torch.tensor(rng.integers(0, F.n, (R, 2)))
    want = torch.stack([fs[pb[r], r].mean() for r in range(R)])
    assert torch.allclose(F.batch_loss([X], [Y], pb), want, rtol=1e-13, atol=1e-13)
    # numpy inputs give the same (torch) outputs
    assert torch.equal(F.f_i(i, X.numpy(), Y.numpy()), fv)


def test_gaussian_quadrature_against_mpmath():
    """E ψ(c + σZ) and E tanh(c + σZ) to 1e−13 for σ from 1e−3 to 20 (both quadrature branches)."""
    mp.mp.dps = 20
    cs = [0.0, -3.0]
    for sig in [1e-3, 0.7, 1.5, 20.0]:
        for c in cs:
            pts = sorted({-12.0, -6.0, -3.0, 0.0, 3.0, 6.0, 12.0}
                         | {(-c + j) / sig for j in (-3, -1, 0, 1, 3) if abs((-c + j) / sig) < 12})
            pts = [-mp.inf] + pts + [mp.inf]
            ref = mp.quad(lambda z: mp.log(mp.cosh(c + sig * z)) * mp.npdf(z), pts)
            refd = mp.quad(lambda z: mp.tanh(c + sig * z) * mp.npdf(z), pts)
            got = gaussian_expectation(lambda s: torch.logaddexp(s, -s) - math.log(2), torch.tensor(c, dtype=DT), torch.tensor(sig, dtype=DT))
            gotd = gaussian_expectation(torch.tanh, torch.tensor(c, dtype=DT), torch.tensor(sig, dtype=DT))
            assert abs(float(got) - float(ref)) <= 1e-13 * max(1.0, abs(float(ref))), (sig, c)
            assert abs(float(gotd) - float(refd)) <= 1e-13, (sig, c)


@given(inst=instances(max_dx=12))
@settings(max_examples=4)
def test_smoothed_against_monte_carlo_and_limit(inst):
    """f_{i,μ}, ∇_x f_{i,μ} by quadrature agree with a 10⁵-sample MC mean (5 s.e.) and → f_i as μ → 0."""
    F, seed = inst
    rng = np.random.default_rng(seed + 2)
    x, y = random_point(F, rng)
    i = int(rng.integers(F.n))
    mu = 10 ** rng.uniform(-1, 0.3)
    gen = torch.Generator().manual_seed(seed)
    U = torch.randn(50, 2000, F.d_x, generator=gen, dtype=DT)
    vals = F.f_i(i, x + mu * U, y)  # (50, 4000)
    gxs = F.grad_i(i, x + mu * U, y)[0].mean(1)  # (50, d_x)
    bm = vals.mean(1)
    se = bm.std() / math.sqrt(50)
    assert abs(bm.mean() - F.smoothed_f_i(i, x, y, mu)) <= 5 * se + 1e-12
    gse = gxs.std(0) / math.sqrt(50)
    # Bonferroni over d_x coordinates: 5 s.e. -> 5.5 s.e.
    assert torch.all((gxs.mean(0) - F.smoothed_grad_x_i(i, x, y, mu)).abs() <= 5.5 * gse + 1e-12)
    tiny = 1e-7
    assert torch.allclose(F.smoothed_f_i(i, x, y, tiny), F.f_i(i, x, y), rtol=1e-9, atol=1e-12)
    assert torch.allclose(F.smoothed_grad_x_i(i, x, y, tiny), F.grad_i(i, x, y)[0], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", FAMS)
def test_default_start_domain_and_gradient(name):
    """Start inside 𝒴, ‖∇f(z₀)‖ not small relative to G (spec §6), Δ̄ = f(z₀) > 0."""
    F = make_family(name, 11)
    for seed in range(3):
        x0, y0 = F.default_start(seed)
        assert x0.shape == (F.d_x,) and y0.shape == (F.d_y,)
        assert F.in_domain(y0)
        gn = torch.cat(F.grad(x0, y0)).norm()
        assert gn >= 0.05 * F.constants()["G"]
        assert float(F.delta(x0, y0)) == float(F.f(x0, y0)) > 0
        assert float(F.gbar(y0)) <= F.constants()["G"]


def test_domains_and_caps():
    A, B, C = make_family("A", 1), make_family("B", 1), make_family("C", 1)
    assert A.domain_ratio(torch.zeros(A.d_y, dtype=DT)) is None
    assert math.isclose(float(B.domain_ratio(torch.full((B.d_y,), B.R_B, dtype=DT))), 1.0)
    assert A.in_domain(torch.full((A.d_y,), 1e6, dtype=DT)) and A.step_cap_y() == math.inf
    assert B.in_domain(torch.full((B.d_y,), B.R_B, dtype=DT))
    assert not B.in_domain(torch.full((B.d_y,), B.R_B * 1.001, dtype=DT))
    kap, th = B.kappa, B.theta
    assert math.isclose(B.R_B, B.o_max + math.asinh(kap * B.b_max / th) + 0.5)
    assert math.isclose(B.step_cap_y(), 0.5 / (th * math.sinh(B.R_B + B.o_max) + kap * B.b_max))
    y = torch.zeros(C.d_y, dtype=DT)
    y[0] = C.R_C
    assert C.in_domain(y) and not C.in_domain(y * 1.001)
    assert math.isclose(C.step_cap_y(), 1 / (18 * C.c_C))
    assert math.isclose(C.R_C, 2 * math.sqrt(2 * C.c_C / C.lam))


def test_family_D_box_cap_and_S():
    """Lemma D: the box [−R_D, R_D]^{d_y} with R_D = o_max + δ; no y-step overshoots o_il when
    η_y θ(1+β) cosh(R_D + o_max) ≤ 1; and (S) implies that cap (so do the caps of B and C), which is why the
    simulator's fixed-step runs at the caps of (S) stay inside the theorem."""
    from hybridopt.theory.bound import step_caps

    D = make_family("D", 2)
    assert math.isclose(D.R_D, D.o_max + D.delta_box)
    assert D.in_domain(torch.full((D.d_y,), D.R_D, dtype=DT)) and not D.in_domain(torch.full((D.d_y,), 1.001 * D.R_D, dtype=DT))
    assert math.isclose(D.step_cap_y(), 1 / (D.theta * (1 + D.beta) * math.cosh(D.R_D + D.o_max)))
    for F in (D, make_family("B", 2), make_family("C", 2), make_family("D", 3, theta=2.0, beta=0.9, delta=0.1)):
        c = F.constants()
        assert step_caps(c)[1] <= F.step_cap_y(), F
    c = D.constants()
    assert c["L_x1"] > 0 and c["L_xy1"] > 0 and c["L_y1"] == 1.0 and c["L_xy0"] == 0.0
    # not L-smooth in y: the yy-curvature along y = o_i + tau e_1 grows like theta (1 - beta) cosh(tau)
    for tau in (5.0, 10.0):
        y = D.o[0].clone()
        y[0] += tau
        _, _, Hyy = D.hessian_blocks(0, torch.zeros(D.d_x, dtype=DT), y)
        assert float(torch.linalg.matrix_norm(Hyy, ord=2)) >= D.theta * (1 - D.beta) * math.cosh(tau)


def test_large_dx_replicates_are_cheap():
    """d_x = 10⁴, 32 replicates: batch_loss and grad run without d_x × d_x matrices and agree."""
    F = make_family("B", 0, n=8, d_x=10_000, d_y=8, m=4)
    G = make_family("A", 0, n=8, d_x=10_000, d_y=8, m=4)
    for fam in (F, G):
        gen = torch.Generator().manual_seed(0)
        X = torch.randn(32, fam.d_x, generator=gen, dtype=DT)
        Y = torch.randn(32, fam.d_y, generator=gen, dtype=DT) * 0.3
        b = torch.randint(0, fam.n, (32, 1), generator=gen)
        L = fam.batch_loss([X], [Y], b)
        assert L.shape == (32,)
        assert torch.allclose(L[5], fam.f_i(int(b[5, 0]), X[5], Y[5]))
        gx, gy = fam.grad(X, Y)
        assert gx.shape == (32, fam.d_x) and gy.shape == (32, fam.d_y)
        assert torch.isfinite(gx).all()


@pytest.mark.parametrize("name", FAMS)
@pytest.mark.parametrize("replicates", [None, 4])
def test_as_problem_with_core(name, replicates):
    """TensorProblem contract: loss shape, autograd ∇_y = mean of grad_i over the batch, probes leave x intact."""
    from hybridopt.directions import Directions, Perturbation
    from hybridopt.problem import TensorProblem

    F = make_family(name, 2, n=5) if name != "C" else make_family("C", 2, n=5, p1=4, p2=3, r=2)
    x0, y0 = F.default_start(1)
    prob = F.as_problem(x0, y0, replicates=replicates)
    assert isinstance(prob, TensorProblem) and prob.n == F.n
    R = () if replicates is None else (replicates,)
    assert prob.replicate_shape == R
    x, y = prob.zo_params[0], prob.fo_params[0]
    assert x.shape == (*R, F.d_x) and y.shape == (*R, F.d_y) and x.dtype == y.dtype == DT
    assert not x.requires_grad and y.requires_grad
    assert x.data_ptr() != x0.data_ptr() and y.data_ptr() != y0.data_ptr()
    batch = torch.tensor([0, 3, 3, 1]) if replicates is None else torch.tensor([[0, 3], [1, 1], [4, 2], [0, 0]])
    loss = prob.loss(batch)
    assert loss.shape == R
    (gy,) = torch.autograd.grad(loss.sum(), [y])
    with torch.no_grad():
        if replicates is None:
            want = torch.stack([F.grad_i(int(j), x, y)[1] for j in batch]).mean(0)
        else:
            want = torch.stack([torch.stack([F.grad_i(int(j), x[r], y[r])[1] for j in batch[r]]).mean(0)
                                for r in range(replicates)])
    assert torch.allclose(gy, want, rtol=1e-12, atol=1e-13)
    x_before = x.clone()
    dirs = Directions("gaussian", 7, prob.zo_params, q=1, replicate_shape=R)
    pert = Perturbation(dirs, 0, 0.01)
    lp = prob.loss(batch, pert)
    assert torch.equal(x, x_before)
    u = dirs.u(0, 0)
    with torch.no_grad():
        want_p = F.batch_loss([x + 0.01 * u], [y], batch)
    assert torch.allclose(lp, want_p, rtol=1e-13, atol=1e-14)
    assert not torch.allclose(lp, loss)
