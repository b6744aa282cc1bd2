"""ZO update rules: SGD (the theorem's) and ZO-SGD with momentum, their state, resume and replay."""
import pytest
import torch

import hybridopt as ho
from hybridopt.zo_rules import ZO_RULES

from .helpers import lora_problem, quadratic_problem


@pytest.mark.parametrize("rule", list(ZO_RULES))
def test_rule_matches_its_formula_on_a_quadratic(rule):
    """x_{t+1} from the step's own projected gradients and directions, by the docstring formula."""
    beta, lr, wd = 0.8, 0.05, 0.3
    prob, *_ = quadratic_problem(n=6, dx=4, dy=2, seed=3)
    prob.zo_params[0].copy_(torch.linspace(-1, 1, 4, dtype=torch.float64))
    cfg = ho.HybridConfig(lr_x=lr, lr_y=1e-3, mu=1e-3, q=2, zo_rule=rule, zo_momentum=beta, weight_decay_x=wd, seed=1)
    opt = ho.HybridOptimizer(prob, cfg)
    x = prob.zo_params[0].clone()
    m = torch.zeros_like(x)
    for t in range(5):
        d = opt.directions(t)
        s = opt.step(torch.arange(6))
        ghat = sum(s.projected[r] / 2 * d.u(r, 0) for r in range(2))
        if rule == "sgd":
            x = x - lr * ghat          # decay acts on matrices only: x is a vector
        else:
            m = beta * m + ghat
            x = x - lr * m
        assert torch.allclose(prob.zo_params[0], x, rtol=1e-12, atol=1e-14)


def test_momentum_differs_from_sgd_and_decays_matrices_only():
    def run(rule):
        prob, base, adapter = lora_problem("zo-full")
        cfg = ho.HybridConfig(lr_x=1e-2, mu=1e-2, zo_rule=rule, weight_decay_x=0.5, seed=2)
        ho.train(ho.HybridOptimizer(prob, cfg), ho.RandomReshuffling(prob.n, 6, seed=0), 4)
        return [p.detach().clone() for p in prob.zo_params]

    a, b = run("sgd"), run("momentum")
    assert not all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("method", ["zo-full", "hybrid"])
def test_momentum_replay_rebuilds_weights_and_buffers(method):
    """The log alone rebuilds x and the momentum buffers (resume: tests/core/test_state.py), also from
    a snapshot of (weights, rule state) taken part-way."""
    cfg = ho.HybridConfig(lr_x=1e-2, lr_y=1e-2, mu=1e-2, zo_rule="momentum", zo_momentum=0.9, seed=7)
    prob, base, adapter = lora_problem(method)
    initial = [p.detach().clone() for p in prob.zo_params]
    opt = ho.HybridOptimizer(prob, cfg)
    ho.train(opt, ho.RandomReshuffling(prob.n, 5, seed=7), 9)
    final_m = [m.clone() for m in opt.rule_state]
    assert any(m.abs().sum() > 0 for m in final_m)
    rebuilt = [p.clone() for p in initial]
    state = ho.replay_zo_log(rebuilt, opt.zo_log, cfg)
    assert all(torch.equal(a, b) for a, b in zip(rebuilt, prob.zo_params))
    assert all(torch.equal(a, b) for a, b in zip(state, final_m))
    mid = [p.clone() for p in initial]
    snap_m = [m.clone() for m in ho.replay_zo_log(mid, opt.zo_log[:4], cfg)]
    state = ho.replay_zo_log(mid, opt.zo_log[4:], cfg, state=snap_m)
    assert all(torch.equal(a, b) for a, b in zip(mid, prob.zo_params))
    assert all(torch.equal(a, b) for a, b in zip(state, final_m))


def test_unknown_rule_fails_loudly():
    with pytest.raises(ValueError, match="zo_rule='adam' is not valid"):
        ho.HybridConfig(zo_rule="adam")
    with pytest.raises(ValueError, match="zo_momentum"):
        ho.HybridConfig(zo_rule="momentum", zo_momentum=1.0)
    assert [n for n, r in ZO_RULES.items() if r.theorem] == ["sgd"]
