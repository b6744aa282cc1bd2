"""Paired probes: f(x+μu) and f(x−μu) from one forward over a doubled batch, u drawn once."""
import pytest
import torch

import hybridopt as ho
from hybridopt.directions import Directions, Pair, Perturbation
from hybridopt.sweep import SweepContext

from .helpers import lora_problem
from .test_chunked import _lm_problem

TOL = {torch.float32: dict(rtol=1e-6, atol=1e-7), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


def _pair_and_separate(prob, seed=11, mu=1e-2, batch=8):
    d = Directions("gaussian", seed, prob.zo_params, context=prob.context)
    pair = prob.pair_loss(torch.arange(batch), Pair(d, 0, mu))
    sep = tuple(prob.loss(torch.arange(batch), Perturbation(d, 0, s)) for s in (mu, -mu))
    return pair, sep


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("method", ["zo-full", "hybrid", "zo-peft"])
def test_paired_probe_equals_two_forwards(dtype, method):
    prob, *_ = lora_problem(method, dtype=dtype)
    before = [p.detach().clone() for p in prob.zo_params]
    (fp, fm), (sp, sm) = _pair_and_separate(prob)
    assert torch.allclose(fp, sp, **TOL[dtype]) and torch.allclose(fm, sm, **TOL[dtype])
    assert not torch.allclose(fp, fm, rtol=0, atol=0)
    assert all(torch.equal(a, b) for a, b in zip(before, prob.zo_params))          # exact restore
    assert all("forward" not in m.__dict__ for m in prob.model.modules())          # wrappers removed
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in prob.model.modules())


@pytest.mark.parametrize("chunk", [10 ** 6, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_paired_linear_with_zo_bias_is_one_batched_matmul_equal_to_two_forwards(dtype, chunk):
    """Every exact nn.Linear (small: one chunk; or row chunks) probes both halves in one batched
    matmul, its ZO bias perturbed per half: the values of two separate forwards."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).to(dtype)
    X = torch.randn(8, 4, 6, dtype=dtype)
    prob = ho.ModuleProblem(model, lambda m, idx: m(X[idx]).float().pow(2).mean(), list(model.parameters()), [], n=8)
    prob.bind(SweepContext(chunk_elements=chunk))
    assert set(prob.chunked) == {model[0], model[2]}
    before = [p.detach().clone() for p in prob.zo_params]
    (fp, fm), (sp, sm) = _pair_and_separate(prob)
    assert torch.allclose(fp, sp, **TOL[dtype]) and torch.allclose(fm, sm, **TOL[dtype])
    assert not torch.allclose(fp, fm, rtol=0, atol=0)
    assert all(torch.equal(a, b) for a, b in zip(before, prob.zo_params))          # exact restore


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("law", list(ho.LAWS))
def test_paired_probe_through_chunked_linear_and_embedding(tied, law):
    prob, model = _lm_problem(tied)
    prob.bind(SweepContext(chunk_elements=2000))
    assert {type(m).__name__ for m in prob.chunked} == {"Embedding", "Linear"}
    before = [p.clone() for p in prob.zo_params]
    d = Directions(law, 11, prob.zo_params, context=prob.context)
    fp, fm = prob.pair_loss(torch.arange(8), Pair(d, 0, 1e-2))
    sp = prob.loss(torch.arange(8), Perturbation(d, 0, 1e-2))
    sm = prob.loss(torch.arange(8), Perturbation(d, 0, -1e-2))
    assert torch.allclose(fp, sp, rtol=1e-6) and torch.allclose(fm, sm, rtol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(before, prob.zo_params))
    assert prob.context.arena.live() == []


@pytest.mark.parametrize("method", ho.METHODS)
def test_paired_and_central_train_alike(method):
    def run(estimator):
        prob, *_ = lora_problem(method)
        cfg = ho.HybridConfig(lr_x=1e-2, lr_y=1e-2, mu=1e-2, estimator=estimator, seed=2)
        opt = ho.HybridOptimizer(prob, cfg)
        tr = ho.train(opt, ho.RandomReshuffling(prob.n, 6, seed=0), 8)
        return torch.tensor(tr.losses), [p.detach().clone() for p in prob.zo_params + prob.fo_params]

    (la, wa), (lb, wb) = run("paired"), run("central")
    assert torch.allclose(la, lb, rtol=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(wa, wb))


class RowMixing(torch.nn.Module):
    """Breaks the pairing rules: each row is taken relative to the batch's first row."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x):
        h = self.lin(x)
        return h - h[:1]


class InternalLoss(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, x, target):
        return torch.nn.functional.mse_loss(self.lin(x), target)   # a scalar over the (doubled) batch


def _problem(model, loss_fn, **kw):
    return ho.ModuleProblem(model, loss_fn, list(model.parameters()), [], n=8, **kw)


def test_a_model_whose_rows_interact_is_caught_by_the_pair_check():
    torch.manual_seed(0)
    X = torch.randn(8, 4)
    prob = _problem(RowMixing(), lambda m, i: m(X[i]).pow(2).mean())
    with pytest.raises(RuntimeError, match="do not follow the pairing rules"):
        _pair_and_separate(prob)


def test_a_loss_computed_inside_the_model_is_refused():
    torch.manual_seed(0)
    X, Y = torch.randn(8, 4), torch.randn(8, 1)
    prob = _problem(InternalLoss(), lambda m, i: m(X[i], Y[i]))
    with pytest.raises(RuntimeError, match="mixes the two probes"):
        _pair_and_separate(prob)
    assert "forward" not in prob.model.__dict__


def test_a_nondeterministic_loss_fn_is_refused():
    torch.manual_seed(0)
    X = torch.randn(8, 4)
    calls = []

    def loss_fn(m, i):
        calls.append(1)
        out = m(X[i])
        if len(calls) == 1:
            out = out + m(X[i])                      # two model calls the first time, one the second
        return out.pow(2).mean()

    prob = _problem(torch.nn.Linear(4, 2), loss_fn, check_pairs=False)
    with pytest.raises(RuntimeError, match="fewer times"):
        _pair_and_separate(prob)


def test_a_zo_module_run_outside_the_model_call_is_refused():
    torch.manual_seed(0)
    X = torch.randn(8, 4)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    prob = _problem(model, lambda m, i: m[1](m[0](X[i])).pow(2).mean())   # submodules called directly
    with pytest.raises(RuntimeError, match="outside a call of the problem's model"):
        _pair_and_separate(prob)
    prob = _problem(model, lambda m, i: m[1](m[0](X[i])).pow(2).mean())
    opt = ho.HybridOptimizer(prob, ho.HybridConfig(estimator="central"))   # the documented way out
    opt.step(torch.arange(8))


class TableFirst(torch.nn.Module):
    """Takes a lookup table as its first argument: the default doubling takes B from it."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, table, idx):
        return self.lin(table[idx])


def test_pair_inputs_replaces_the_default_doubling():
    torch.manual_seed(0)
    table = torch.randn(8, 4)

    def loss_fn(m, i):
        return m(table, i).pow(2).mean()

    with pytest.raises(RuntimeError, match="mixes the two probes"):   # B taken from the table (8 rows)
        _pair_and_separate(_problem(TableFirst(), loss_fn), batch=4)

    def pair_inputs(args, kwargs):
        t, idx = args
        return (t, torch.cat([idx, idx])), kwargs, idx.shape[0]

    model = TableFirst()
    (fp, fm), (sp, sm) = _pair_and_separate(_problem(model, loss_fn, pair_inputs=pair_inputs), batch=4)
    assert torch.allclose(fp, sp) and torch.allclose(fm, sm)
