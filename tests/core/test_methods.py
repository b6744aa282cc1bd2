"""Contract table: every method x estimator x direction on tiny objectives."""
import itertools

import pytest
import torch

import hybridopt as ho

from .helpers import full_grad, lora_problem, quadratic_problem

ESTIMATORS = list(ho.ESTIMATORS)
DIRECTIONS = list(ho.LAWS)


def _snapshot(ts):
    return [t.detach().clone() for t in ts]


def _changed(before, after):
    return [not torch.equal(a, b) for a, b in zip(before, after)]


@pytest.mark.parametrize("method", ho.METHODS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_each_method_touches_exactly_its_blocks(method, estimator):
    prob, base, adapter = lora_problem(method)
    zo_ids = {id(p) for p in prob.zo_params}
    fo_ids = {id(p) for p in prob.fo_params}
    everything = base + adapter
    before = _snapshot(everything)
    opt = ho.HybridOptimizer(prob, ho.HybridConfig(lr_x=1e-2, lr_y=1e-2, mu=1e-2, estimator=estimator))
    stats = opt.step(torch.arange(8))
    opt.flush()  # the ZO update is folded into the next sweep: write it now
    after = _snapshot(everything)
    for p, b, a in zip(everything, before, after):
        moved = not torch.equal(a, b)
        should = id(p) in zo_ids or id(p) in fo_ids
        assert moved == should, (method, tuple(p.shape), moved, should)
        assert torch.isfinite(a).all()
    assert stats.loss.shape == () and torch.isfinite(stats.loss)
    assert (stats.projected is None) == (not prob.zo_params)
    if prob.zo_params:
        assert stats.projected.shape == (1,)
        # sweeps over the ZO block at step 0 (nothing pending yet): one per probe pair or point
        assert stats.zo_passes == {"paired": 1.0, "central": 2.0, "forward": 1.0}[estimator]
        assert stats.zo_evals == 8 * (1 if estimator == "forward" else 2) + (
            8 if estimator == "forward" and not prob.fo_params else 0)
    else:
        assert stats.zo_passes == 0 and stats.zo_evals == 0
    assert stats.fo_grads == (8 if prob.fo_params else 0)


def test_method_block_table():
    base = [torch.zeros(2, 2), torch.zeros(2)]
    adapter = [torch.zeros(2, 1)]
    table = {m: ho.split_blocks(m, base, adapter) for m in ho.METHODS}
    ids = lambda ts: [id(t) for t in ts]
    assert ids(table["fo-full"][1]) == ids(base + adapter) and table["fo-full"][0] == []
    assert ids(table["fo-peft"][1]) == ids(adapter) and table["fo-peft"][0] == []
    assert ids(table["zo-full"][0]) == ids(base + adapter) and table["zo-full"][1] == []
    assert ids(table["zo-peft"][0]) == ids(adapter) and table["zo-peft"][1] == []
    assert ids(table["hybrid"][0]) == ids(base) and ids(table["hybrid"][1]) == ids(adapter)
    with pytest.raises(ValueError, match="needs a PEFT module"):
        ho.split_blocks("hybrid", base, [])
    with pytest.raises(ValueError, match="unknown method"):
        ho.split_blocks("mezo", base, adapter)


@pytest.mark.parametrize("estimator,direction", itertools.product(ESTIMATORS, DIRECTIONS))
@pytest.mark.parametrize("q", [1, 3])
def test_every_estimator_runs_on_quadratic(estimator, direction, q):
    prob, *_ = quadratic_problem()
    cfg = ho.HybridConfig(lr_x=1e-2, lr_y=1e-2, mu=1e-3, q=q, estimator=estimator, direction=direction)
    trace = ho.train(ho.HybridOptimizer(prob, cfg), ho.RandomReshuffling(prob.n, 3, seed=0), 8)
    assert len(trace) == 8 and all(torch.isfinite(torch.tensor(trace.losses)))
    assert trace.projected.shape == (8, q)
    assert max(trace.zo_passes) == (2 * q + 1 if estimator == "central" else q + 1)


@pytest.mark.parametrize("method", ho.METHODS)
def test_same_seed_same_trace_other_seed_differs(method):
    def run(seed):
        prob, base, adapter = lora_problem(method)
        opt = ho.HybridOptimizer(prob, ho.HybridConfig(lr_x=1e-2, lr_y=1e-2, mu=1e-2, seed=seed))
        tr = ho.train(opt, ho.RandomReshuffling(prob.n, 4, seed=seed), 6)
        return tr.losses, [p.detach().clone() for p in base + adapter]

    l1, w1 = run(0)
    l2, w2 = run(0)
    assert l1 == l2 and all(torch.equal(a, b) for a, b in zip(w1, w2))
    l3, _ = run(1)
    assert l3 != l1


def test_hybrid_converges_on_convex_quadratic():
    prob, A, b, zstar = quadratic_problem(n=16, dx=4, dy=3, seed=3)
    cfg = ho.HybridConfig(lr_x=0.1, lr_y=0.1, mu=1e-5, q=4, seed=0, schedule="linear", total_steps=400)
    ho.train(ho.HybridOptimizer(prob, cfg), ho.RandomReshuffling(prob.n, 4, seed=0), 400)
    z = torch.cat([prob.zo_params[0], prob.fo_params[0]]).detach()
    assert (z - zstar).norm() < 0.1 * zstar.norm()  # started at z0 = 0
    assert full_grad(A, b, z).norm() < 0.1 * full_grad(A, b, torch.zeros_like(z)).norm()


def test_forward_estimator_reuses_fo_forward():
    # hybrid + forward difference: the unperturbed value comes from the FO forward,
    # so only q perturbed forwards are spent on the ZO block.
    prob, *_ = lora_problem("hybrid")
    opt = ho.HybridOptimizer(prob, ho.HybridConfig(estimator="forward", q=2), cache_directions=False)
    opt.step(torch.arange(4))
    stats = opt.step(torch.arange(4))
    # q perturbed forwards, one sweep each; the first also writes the previous step's update
    assert stats.zo_evals == 4 * 2 and stats.zo_passes == 2.0 and stats.zo_writes == 1.0


def test_stationarity_proxies():
    """fo_grad_sq = ||∇_y f_B||² exactly; E[g²] = ||∇_x f_B||² for Gaussian directions (+O(μ²))."""
    reps = 4000
    prob, A, b, _ = quadratic_problem(n=6, dx=5, dy=2, seed=2, replicates=reps)
    prob.zo_params[0].fill_(0.2)
    opt = ho.HybridOptimizer(prob, ho.HybridConfig(lr_x=1e-9, lr_y=1e-9, mu=1e-4, seed=1))
    stats = opt.step(torch.arange(6).expand(reps, 6))
    z = torch.cat([torch.full((5,), 0.2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)])
    g = full_grad(A, b, z)
    assert torch.allclose(stats.fo_grad_sq, g[5:].pow(2).sum().expand(reps), rtol=1e-9)
    est = stats.projected[0].pow(2)
    means = est.reshape(50, -1).mean(1)
    se = means.std() / 50 ** 0.5
    assert abs(est.mean() - g[:5].pow(2).sum()) <= 5 * se


def test_curvature_probe_on_quadratic():
    """For a quadratic the second difference is exact: [f(x+μu)+f(x-μu)-2f(x)]/μ² = uᵀ∇²ₓf u."""
    prob, A, b, _ = quadratic_problem(n=4, dx=5, dy=2, seed=5)
    opt = ho.HybridOptimizer(prob, ho.HybridConfig(lr_x=1e-9, lr_y=1e-9, mu=1e-2, q=2, seed=2))
    dirs = opt.directions(0)
    stats = opt.step(torch.arange(4))
    H = torch.einsum("nkd,nke->de", A, A)[:5, :5] / 4
    for r in range(2):
        u = dirs.u(r, 0)
        assert torch.allclose(stats.curvature[r], u @ H @ u, rtol=1e-6)
