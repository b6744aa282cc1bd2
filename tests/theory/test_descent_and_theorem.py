"""T6c (L5, one-epoch descent) and T7 (L6(A), the fixed-step bound B(T)) of spec §5, on Families A–C.

Every epoch is run by the optimizer core (``hybridopt.HybridOptimizer`` on ``family.as_problem(x0, y0,
replicates=R)``, ``hybridopt.train`` with a batch-size-1 ``RandomReshuffling`` sampler; a fixed permutation
for T6c), in float64 with float64 Gaussian directions.  The measured quantities are exact (closed-form f and
∇f of the families at the epoch starts z_t).

* **T6c** (MC "≤", N_rep = 4000 epochs from one z_t, consistency check only): the mean over replicates of
  f(z_{t+1}) − f(z_t) + (nη_x/4)‖∇ₓf(z_t)‖² + (nη_y/4)‖∇ᵧf(z_t)‖² is ≤ 𝓔 (the RHS of ``lemmas.L5``).
* **T7** (MC "≤" over R = 100 runs in B = 50 batches, Bonferroni over the grid, consistency check only):
  at each T of a log-grid up to 200 epochs, Ā_T = mean_r (1/T) Σ_{t<T} ‖∇f(z_t)‖² ≤ B(T) (``lemmas.L6A``),
  the per-block forms (``L6A_x``, ``L6A_y``) and the weighted form
  (1/T) Σ_t E[η_x‖∇ₓf‖² + η_y‖∇ᵧf‖²] ≤ 4Δ/(nT) + 4𝓔/n (= η_x · RHS of ``L6A_x``).

Both bounds are loose, so each test also checks that it *can* fail: the same measured quantities are run
through the same pass rule against a right-hand side below them (T6c: a value below the measured mean,
since the measured mean may be negative; T7: B(T) with its constant shrunk to a tenth of the smallest
measured ratio Ā_T/B(T)), and the rule must report a violation.  A test whose measurement were NaN, empty
or not wired to the rule would fail there.

Step sizes follow spec §5: η_x = 10^U[−3,0]/(6nL_X), η_y = 10^U[−3,0]/(4nL_Y) (also ≤ the invariance cap
of Lemmas 4.3/4.4 for B and C), μ = 10^U[−4,0.3], q ∈ {1, 2, 4, 8}.  Δ is taken as Δ̄ = f(z₀) − 0 ≥ Δ.
"""
from __future__ import annotations


import numpy as np
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hybridopt import HybridConfig, HybridOptimizer, RandomReshuffling, train
from hybridopt.theory import lemmas as LM
from hybridopt.theory.bound import step_caps
from hybridopt.theory.families import DT, make_family

try:
    from stats import batch_mean_se, bonferroni_z, mc_le
    from strategies import domain_points, instances as _instances
except ImportError:  # pragma: no cover - package-style import
    from tests.theory.stats import batch_mean_se, bonferroni_z, mc_le
    from tests.theory.strategies import domain_points, instances as _instances

EPS = np.finfo(np.float64).eps
N_REP = 4000          # T6c: epochs from one z_t (spec §5)
R_RUNS = 100          # T7: independent runs (spec: R >= 32), B = 50 batches of 2 runs
T_MAX = 200           # T7: longest horizon
GRID = np.unique(np.geomspace(1, T_MAX, 8).round().astype(int))  # 1, 2, 5, 10, 21, 44, 94, 200


# -------------------------------------------------------------------------------------------- helpers


class _FixedPermutation(RandomReshuffling):
    """The core's sampler walking one prescribed permutation in every epoch and replicate (spec §2: any
    𝓕_{t,0}-measurable permutation is allowed; L5 conditions on π_t)."""

    def __init__(self, perm: torch.Tensor, replicates: int) -> None:
        super().__init__(int(perm.numel()), 1, seed=0, replicates=replicates)
        self._perm = torch.as_tensor(perm, dtype=torch.long).expand(replicates, self.n)

    def _new_perm(self) -> torch.Tensor:
        return self._perm.clone()


def core_epochs(F, x0, y0, eta_x, eta_y, mu, q, R, epochs, seed, perm=None, law="gaussian") -> dict:
    """``epochs`` epochs of HybridRR through the core, R replicates from (x0, y0), directions of law ``law``.

    Returns f, gx2, gy2 of shape (epochs + 1, R): f(z_t), ‖∇ₓf(z_t)‖², ‖∇ᵧf(z_t)‖² at every epoch start.
    """
    prob = F.as_problem(x0, y0, replicates=R)
    cfg = HybridConfig(lr_x=float(eta_x), lr_y=float(eta_y), mu=float(mu), q=int(q), seed=int(seed), direction=law)
    opt = HybridOptimizer(prob, cfg, keep_zo_log=False)
    smp = RandomReshuffling(F.n, 1, seed=int(seed), replicates=R) if perm is None else _FixedPermutation(perm, R)
    x, y = prob.zo_params[0], prob.fo_params[0]
    f, gx2, gy2 = [], [], []
    for t in range(epochs + 1):
        with torch.no_grad():
            yd = y.detach()
            gx, gy = F.grad(x, yd)
            f.append(F.f(x, yd))
            gx2.append((gx * gx).sum(-1))
            gy2.append((gy * gy).sum(-1))
            assert F.in_domain(yd), "iterate left the invariant set of A3(ii)"
        if t < epochs:
            train(opt, smp, F.n)
    assert opt.step_count == epochs * F.n and smp.epoch == epochs
    return {k: torch.stack(v).numpy() for k, v in (("f", f), ("gx2", gx2), ("gy2", gy2))}


def constants(F, **kw) -> dict:
    c = {k: v for k, v in F.constants().items() if k != "case"}
    c.update(kw)
    return c


def step_sizes(F, ex: float, ey: float) -> tuple[float, float]:
    """Spec §5: η_x = 10^ex/(6nL_X), η_y = 10^ey/(4nL_Y), and η_y ≤ the y-cap of Lemmas 4.3/4.4."""
    cap_x, cap_y = step_caps(constants(F))
    return 10 ** ex * cap_x, min(10 ** ey * cap_y, F.step_cap_y())


def domain_point(F, rng) -> tuple[torch.Tensor, torch.Tensor]:
    """One z_t of the cylinder (spec §5; shared strategy :func:`strategies.domain_points`)."""
    x, y = domain_points(F, rng, 1)
    return x[0], y[0]


def instances(families=("A", "B", "C", "D"), max_n=8, max_dx=30, max_dy=6, max_p=6):
    """Spec §5 dimensions (d_x capped for time), the shared strategy without its seed."""
    return _instances(families, max_dx=max_dx, max_n=max_n, max_dy=max_dy, max_p=max_p).map(lambda fs: fs[0])


def below(samples, z: float = 5.0, B: int = 50) -> float:
    """A right-hand side strictly below the measured mean by 10 batch standard errors (and a relative margin),
    i.e. one the MC "≤" rule must reject."""
    m, se = batch_mean_se(samples, B)
    m, se = float(m), float(se)
    return m - 2 * z * se - 1e-6 * (abs(m) + se) - 1e-300


# ------------------------------------------------------------------------------------------------ T6c


def t6c_measure(F, x, y, eta_x, eta_y, mu, q, perm, seed, law="gaussian") -> tuple[np.ndarray, float, float]:
    """Samples of the L5 (R5 for Rademacher directions) LHS over N_REP epochs from z_t = (x, y) with π_t = perm, the
    RHS 𝓔 and the rounding allowance 8·eps·max_r(|f(z_t)| + |f(z_{t+1})|) of the difference f(z_{t+1}) − f(z_t)."""
    out = core_epochs(F, x, y, eta_x, eta_y, mu, q, N_REP, 1, seed, perm=perm, law=law)
    f0, f1 = out["f"][0], out["f"][1]
    # one z_t for every replicate (batched kernels may round replicate rows differently in the last bits)
    assert np.allclose(f0, f0[0], rtol=1e-12, atol=0) and np.allclose(out["gx2"][0], out["gx2"][0, 0], rtol=1e-12, atol=0)
    n = F.n
    samples = f1 - f0 + n * eta_x / 4 * out["gx2"][0] + n * eta_y / 4 * out["gy2"][0]
    rhs = (LM.L5 if law == "gaussian" else LM.R5).evaluate(constants(F, eta_x=eta_x, eta_y=eta_y, mu=mu, q=q))
    return samples, rhs, float(8 * EPS * np.max(np.abs(f0) + np.abs(f1)))


@given(F=instances(), run=st.integers(0, 2**31 - 1), ex=st.floats(-3, 0), ey=st.floats(-3, 0),
       lmu=st.floats(-4, 0.3), q=st.sampled_from([1, 2, 4, 8]), data=st.data())
@settings(max_examples=6)
def test_T6c_L5_one_epoch_descent(F, run, ex, ey, lmu, q, data):
    """T6c: mean over N_rep = 4000 epochs (replicates through the core) of f(z_{t+1}) − f(z_t) +
    (nη_x/4)‖∇ₓf(z_t)‖² + (nη_y/4)‖∇ᵧf(z_t)‖² ≤ 𝓔 (MC "≤"); and the same samples against a value below
    their mean are rejected (falsification)."""
    rng = np.random.default_rng(run)
    perm = torch.tensor(data.draw(st.permutations(range(F.n))), dtype=torch.long)
    eta_x, eta_y = step_sizes(F, ex, ey)
    mu = 10.0 ** lmu
    x, y = domain_point(F, rng)
    samples, rhs, rounding = t6c_measure(F, x, y, eta_x, eta_y, mu, q, perm, run)
    assert np.all(np.isfinite(samples)) and samples.shape == (N_REP,)
    chk = mc_le(samples, rhs + rounding, what="T6c L5")
    assert chk, chk
    bad = mc_le(samples, below(samples), what="T6c falsification")
    assert bad.violated, bad


def _stationary_point(F, x0, y0) -> tuple[torch.Tensor, torch.Tensor]:
    """A stationary point of f (BFGS on the closed-form f, ∇f, to ‖∇f‖ ≈ 1e−12)."""
    from scipy.optimize import minimize

    def fg(v):
        x, y = torch.tensor(v[:F.d_x], dtype=DT), torch.tensor(v[F.d_x:], dtype=DT)
        gx, gy = F.grad(x, y)
        return float(F.f(x, y)), np.concatenate([gx.numpy(), gy.numpy()])

    r = minimize(fg, np.concatenate([x0.numpy(), y0.numpy()]), jac=True, method="BFGS", options=dict(gtol=1e-12))
    assert np.linalg.norm(r.jac) < 1e-9, r
    return torch.tensor(r.x[:F.d_x], dtype=DT), torch.tensor(r.x[F.d_x:], dtype=DT)


def test_T6c_falsification_shrunk_calE():
    """T6c can fail on the constant itself.  From a stationary point z_t of f (n = 2, so the components pull
    the epoch away from it, and the ZO noise adds to that) the L5 LHS is E f(z_{t+1}) − f(z_t) > 0, resolved
    by the MC rule; 𝓔 passes, and 𝓔 shrunk to a tenth of the measured mean is rejected."""
    F = make_family("A", 3, n=2, d_x=8, d_y=2, m=2)
    x, y = _stationary_point(F, *F.default_start(0))
    eta_x, eta_y = step_sizes(F, 0.0, 0.0)
    samples, rhs, rounding = t6c_measure(F, x, y, eta_x, eta_y, 1e-2, 1, torch.arange(F.n), 11)
    m, se = batch_mean_se(samples)
    m, se = float(m), float(se)
    assert m - 5 * se > 0, (m, se)  # a positive, resolved LHS
    chk = mc_le(samples, rhs + rounding, what="T6c at a stationary point")
    assert chk, chk
    chk = mc_le(samples, rhs * (0.1 * m / rhs), what="T6c with calE -> calE * (m / calE) / 10")
    assert chk.violated, chk


# ------------------------------------------------------------------------------------------------- T7


def t7_measure(F, eta_x, eta_y, mu, q, seed) -> tuple[dict, dict]:
    """Per-run running averages at the grid T (arrays (R, len(GRID))) and the RHS of each form."""
    x0, y0 = F.default_start(seed % 1000)
    out = core_epochs(F, x0, y0, eta_x, eta_y, mu, q, R_RUNS, int(GRID[-1]), seed)
    T = GRID.astype(float)
    ax = np.cumsum(out["gx2"][:-1], 0)[GRID - 1] / T[:, None]  # (len(GRID), R)
    ay = np.cumsum(out["gy2"][:-1], 0)[GRID - 1] / T[:, None]
    meas = {"full": (ax + ay).T, "x": ax.T, "y": ay.T, "weighted": (eta_x * ax + eta_y * ay).T}
    c = constants(F, eta_x=eta_x, eta_y=eta_y, mu=mu, q=q, Delta=float(F.delta(x0, y0)), T=T)
    rx = LM.L6A_x.lambdify()(**c)
    rhs = {"full": LM.L6A.lambdify()(**c), "x": rx, "y": LM.L6A_y.lambdify()(**c), "weighted": eta_x * rx}
    return meas, rhs


def t7_checks(meas: dict, rhs: dict, shrink: float = 1.0) -> list:
    """The MC "≤" rule at every grid T, Bonferroni over the grid (z_K), for the four forms."""
    zk = bonferroni_z(len(GRID))
    return [mc_le(meas[k][:, j], shrink * rhs[k][j], z=zk, what=f"T7 {k} T={GRID[j]}")
            for k in meas for j in range(len(GRID))]


_A_SMALL = make_family("A", 0, n=3, d_x=6, d_y=2, m=2)
_B_SMALL = make_family("B", 1, n=2, d_x=5, d_y=2, m=2)
_D_SMALL = make_family("D", 2, n=3, d_x=6, d_y=2, m=2)


@given(F=instances(max_n=3, max_dx=8, max_dy=3, max_p=3), run=st.integers(0, 2**31 - 1), ex=st.floats(-3, 0),
       ey=st.floats(-3, 0), lmu=st.floats(-4, 0.3), q=st.sampled_from([1, 2, 4, 8]))
@example(F=_A_SMALL, run=0, ex=0.0, ey=0.0, lmu=-3.0, q=1)  # at the caps of (S): Ā_T moves
@example(F=_B_SMALL, run=1, ex=0.0, ey=0.0, lmu=-2.0, q=2)
@example(F=_D_SMALL, run=2, ex=0.0, ey=0.0, lmu=-2.0, q=1)   # L_x1, L_xy1 > 0, at the caps of (S)
@settings(max_examples=2)
def test_T7_L6A_fixed_step_bound(F, run, ex, ey, lmu, q):
    """T7: Ā_T ≤ B(T) at each T of a log-grid up to 200 epochs (R = 100 runs through the core), the x- and
    y-block forms and the weighted form; and every one of these checks rejects B(T) with its constant
    shrunk to a tenth of the smallest measured ratio (falsification)."""
    eta_x, eta_y = step_sizes(F, ex, ey)
    meas, rhs = t7_measure(F, eta_x, eta_y, 10.0 ** lmu, q, run)
    for k in meas:
        assert meas[k].shape == (R_RUNS, len(GRID)) and np.all(np.isfinite(meas[k])) and np.all(meas[k] > 0), k
    for chk in t7_checks(meas, rhs):
        assert chk, chk
    ratio = min(float((meas[k].mean(0) / rhs[k]).min()) for k in meas)
    assert ratio > 0, ratio
    for chk in t7_checks(meas, rhs, shrink=0.1 * ratio):
        assert chk.violated, chk
