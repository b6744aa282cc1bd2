"""The ZO estimator: unbiasedness on a quadratic (L2(c)), exact restore after probes, directions."""
import pytest
import torch

import hybridopt as ho
from hybridopt.directions import Directions, Perturbation

from .helpers import full_grad, lora_problem, quadratic_problem


def _mc_mean_and_se(samples, batches=50):
    """Mean and the batch standard error s_B of spec §5 (B = 50 batches)."""
    means = samples.reshape(batches, -1, *samples.shape[1:]).mean(1)
    return samples.mean(0), means.std(0) / batches ** 0.5


@pytest.mark.parametrize("direction", ["gaussian", "rademacher", "sphere"])
@pytest.mark.parametrize("estimator", ["central", "forward"])
def test_estimator_unbiased_on_quadratic(direction, estimator):
    """E ĝ = ∇_x f on a quadratic (the smoothing bias vanishes for quadratics, L2(c)).
    Pass rule of spec §5 ("=" check): |mean - target| <= 5 s_B, Bonferroni over coordinates."""
    reps = 5000
    prob, A, b, _ = quadratic_problem(n=6, dx=5, dy=2, seed=1, replicates=reps)
    x0 = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    prob.zo_params[0].copy_(x0)
    prob.fo_params[0].data.fill_(0.3)
    cfg = ho.HybridConfig(lr_x=1.0, lr_y=1e-9, mu=1e-2, direction=direction, estimator=estimator, seed=4)
    opt = ho.HybridOptimizer(prob, cfg)
    batch = torch.arange(6).expand(reps, 6)
    opt.step(batch)
    # lr_x = 1: x_new - x0 = -ĝ per replicate
    ghat = -(prob.zo_params[0] - x0)
    z = torch.cat([x0, torch.full((2,), 0.3, dtype=torch.float64)])
    target = full_grad(A, b, z)[:5]
    mean, se = _mc_mean_and_se(ghat)
    assert ((mean - target).abs() <= 5 * se * 1.3).all(), (mean, target, se)  # 1.3 ~ Bonferroni, 5 coords
    # falsification power: a biased estimator (x2) is rejected by the same rule
    assert not ((2 * mean - target).abs() <= 5 * 2 * se * 1.3).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", ["zo-full", "hybrid", "zo-peft"])
def test_probes_leave_weights_bit_identical(dtype, method):
    prob, base, adapter = lora_problem(method, dtype=dtype)
    before = [p.detach().clone() for p in prob.zo_params]
    dirs = Directions("gaussian", 123, prob.zo_params)
    l0 = prob.loss(torch.arange(8))
    lp = prob.loss(torch.arange(8), Perturbation(dirs, 0, 1e-1))
    lm = prob.loss(torch.arange(8), Perturbation(dirs, 0, -1e-1))
    assert all(torch.equal(a, b) for a, b in zip(before, prob.zo_params))
    assert not torch.equal(lp, lm) and not torch.equal(lp, l0)
    assert all(isinstance(p, torch.nn.Parameter) for p in prob.zo_params)
    # the model still holds the original Parameter objects
    held = {id(p) for p in prob.model.parameters()}
    assert all(id(p) in held for p in prob.zo_params)


def test_naive_inplace_restore_is_not_exact_in_bf16():
    """Why the out-of-place design: MeZO's +mu, -2mu, +mu in-place passes do not restore bf16
    weights (MeZO #42).  This shows the check above has teeth."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1000, generator=g).to(torch.bfloat16)
    u = torch.randn(1000, generator=g).to(torch.bfloat16)
    v = w.clone()
    mu = 1e-3
    v.add_(u, alpha=mu)
    v.add_(u, alpha=-2 * mu)
    v.add_(u, alpha=mu)
    assert not torch.equal(v, w)


def test_perturbation_matches_explicit_formula():
    prob, *_ = quadratic_problem()
    x = prob.zo_params[0]
    x.normal_(generator=torch.Generator().manual_seed(0))
    dirs = Directions("gaussian", 7, [x])
    u = dirs.u(0, 0)
    batch = torch.arange(prob.n)
    expect = prob.fn([x + 0.5 * u], prob.fo_params, batch)
    got = prob.loss(batch, Perturbation(dirs, 0, 0.5))
    assert torch.equal(expect, got)


def test_shared_weight_gets_one_perturbation():
    """Tied weights (e.g. embeddings and LM head) see the same perturbed tensor in every use."""
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(4, 4, bias=False)
            self.b = torch.nn.Linear(4, 4, bias=False)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)))

    torch.manual_seed(0)
    m = Tied()
    X = torch.randn(5, 4)
    W = m.a.weight
    prob = ho.ModuleProblem(m, lambda mod, idx: mod(X[idx]).pow(2).mean(), [W], [], n=5)
    dirs = Directions("gaussian", 3, [W])
    got = prob.loss(torch.arange(5), Perturbation(dirs, 0, 0.1))
    Wp = W + 0.1 * dirs.u(0, 0)
    expect = (torch.tanh(X @ Wp.T) @ Wp.T).pow(2).mean()
    assert torch.allclose(got, expect, atol=1e-6)


def test_weight_read_outside_its_module_is_reported():
    class Sneaky(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 3)

        def forward(self, x):
            return x @ self.lin.weight  # bypasses lin.forward

    m = Sneaky()
    X = torch.randn(4, 3)
    prob = ho.ModuleProblem(m, lambda mod, idx: mod(X[idx]).sum(), [m.lin.weight], [], n=4)
    with pytest.raises(RuntimeError, match="not read through their module"):
        prob.loss(torch.arange(4), Perturbation(Directions("gaussian", 0, [m.lin.weight]), 0, 0.1))
    assert torch.equal(m.lin.weight, m.lin.weight.detach())


def test_gradient_accumulation_uses_same_directions():
    def run(accum):
        prob, *_ = quadratic_problem(n=8)
        opt = ho.HybridOptimizer(prob, ho.HybridConfig(lr_x=1e-2, lr_y=1e-2, q=2, grad_accum=accum, seed=3))
        stats = opt.step(torch.arange(8))
        return stats, [p.clone() for p in prob.zo_params + prob.fo_params]

    s1, w1 = run(1)
    s4, w4 = run(4)
    assert torch.allclose(s1.projected, s4.projected, rtol=1e-10, atol=1e-12)
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(w1, w4))
    assert s4.zo_passes == 2 * 4 + 1  # q pairs x 4 micro-batches, one sweep each, + the (eager) update


@pytest.mark.parametrize("direction", ["gaussian", "sphere"])
def test_direction_cache_changes_nothing_but_cost(direction):
    def run(cache):
        prob, *_ = quadratic_problem(n=8)
        opt = ho.HybridOptimizer(prob, ho.HybridConfig(lr_x=1e-2, lr_y=1e-2, q=2, direction=direction, seed=3),
                                 cache_directions=cache)
        tr = ho.train(opt, ho.RandomReshuffling(8, 2, seed=0), 5)
        return tr.losses, [p.clone() for p in prob.zo_params + prob.fo_params]

    (l1, w1), (l2, w2) = run(True), run(False)
    assert l1 == l2 and all(torch.equal(a, b) for a, b in zip(w1, w2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_arena_probe_equals_a_model_holding_the_perturbed_weights(dtype):
    """A ModuleProblem probe forms fl(p + fl(mu*u)) in arena memory, module by module: the loss of a
    copy of the model whose weights are set to those values (Perturbation.apply), bit for bit."""
    import copy

    prob, *_ = lora_problem("zo-full", dtype=dtype)
    dirs = Directions("gaussian", 11, prob.zo_params)
    batch = torch.arange(8)
    got = prob.loss(batch, Perturbation(dirs, 0, 1e-2))
    twin = copy.deepcopy(prob.model)
    pert = Perturbation(dirs, 0, 1e-2)
    with torch.no_grad():
        for (name, p), q in zip(prob.model.named_parameters(), twin.parameters()):
            j = next(i for i, z in enumerate(prob.zo_params) if z is p)
            q.copy_(pert.apply(j, p))
        want = prob.loss_fn(twin, batch)
    assert torch.equal(got, want)


def test_float32_directions_for_float64_blocks():
    prob, *_ = quadratic_problem()
    d64 = Directions("gaussian", 5, prob.zo_params)
    d32 = Directions("gaussian", 5, prob.zo_params, dtype="float32")
    assert d64.u(0, 0).dtype == torch.float64 and d32.u(0, 0).dtype == torch.float32
    opt = ho.HybridOptimizer(prob, ho.HybridConfig(direction_dtype="float32"))
    assert opt.step(torch.arange(4)).projected.dtype == torch.float64
    assert prob.zo_params[0].dtype == torch.float64
