"""Resume, ZO-log replay, config validation and schedules."""
import pytest
import torch

import hybridopt as ho

from .helpers import lora_problem, quadratic_problem


RESUME_CASES = ([(m, fo, 1, 1, "gaussian", "sgd") for m in ho.METHODS for fo in ("sgd", "adam")]
                + [("hybrid", "sgd", 2, 1, "gaussian", "sgd"), ("hybrid", "sgd", 1, 3, "rademacher", "sgd"),
                   ("zo-full", "sgd", 2, 2, "rademacher", "sgd"),
                   ("hybrid", "adam", 1, 1, "gaussian", "momentum"), ("zo-full", "sgd", 2, 1, "gaussian", "momentum")])


@pytest.mark.parametrize("method,fo_optimizer,q,accum,law,rule", RESUME_CASES)
def test_resume_is_bit_identical(method, fo_optimizer, q, accum, law, rule):
    """Checkpoint (state_dict, which flushes the folded update and holds the ZO rule's state)
    after 4 steps, resume in a fresh setup, run 6 more: the same losses and weights as 10
    uninterrupted steps."""
    cfg = ho.HybridConfig(lr_x=1e-2, lr_y=1e-2, mu=1e-2, fo_optimizer=fo_optimizer, schedule="cosine",
                          total_steps=10, warmup_steps=2, q=q, grad_accum=accum, direction=law, zo_rule=rule,
                          seed=7)

    def fresh():
        prob, base, adapter = lora_problem(method)
        return prob, base + adapter, ho.HybridOptimizer(prob, cfg), ho.RandomReshuffling(prob.n, 5, seed=7)

    prob, params, opt, samp = fresh()
    full = ho.train(opt, samp, 10)
    final = [p.detach().clone() for p in params]

    prob, params, opt, samp = fresh()
    first = ho.train(opt, samp, 4)
    saved = {"opt": opt.state_dict(), "params": [p.detach().clone() for p in params],
             "sampler": samp.state_dict()}
    assert (rule == "momentum") == any(m.abs().sum() > 0 for m in saved["opt"]["zo_rule"])
    prob, params, opt, samp = fresh()
    with torch.no_grad():
        for p, v in zip(params, saved["params"]):
            p.copy_(v)
    opt.load_state_dict(saved["opt"])
    samp.load_state_dict(saved["sampler"])
    second = ho.train(opt, samp, 6)
    assert first.losses + second.losses == full.losses
    assert all(torch.equal(a, b) for a, b in zip(params, final))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("q", [1, 2])
def test_zo_log_replay_reconstructs_weights_bit_exactly(dtype, q):
    cfg = ho.HybridConfig(lr_x=1e-2, lr_y=1e-2, mu=1e-2, q=q, weight_decay_x=0.1, seed=3)
    prob, base, adapter = lora_problem("zo-full", dtype=dtype)
    initial = [p.detach().clone() for p in prob.zo_params]
    opt = ho.HybridOptimizer(prob, cfg)
    ho.train(opt, ho.RandomReshuffling(prob.n, 4, seed=0), 12)
    rebuilt = [p.clone() for p in initial]
    ho.replay_zo_log(rebuilt, opt.zo_log, cfg)
    assert all(torch.equal(a, b) for a, b in zip(rebuilt, prob.zo_params))
    assert not all(torch.equal(a, b) for a, b in zip(initial, prob.zo_params))
    # a log missing one step does not reconstruct
    partial = [p.clone() for p in initial]
    ho.replay_zo_log(partial, opt.zo_log[:-1], cfg)
    assert not all(torch.equal(a, b) for a, b in zip(partial, prob.zo_params))


def test_load_state_with_other_config_is_refused():
    prob, *_ = quadratic_problem()
    a = ho.HybridOptimizer(prob, ho.HybridConfig(lr_x=1e-3))
    b = ho.HybridOptimizer(prob, ho.HybridConfig(lr_x=2e-3))
    with pytest.raises(ValueError, match="differs in: lr_x"):
        b.load_state_dict(a.state_dict())


@pytest.mark.parametrize("kwargs,msg", [
    ({"lr_x": 0}, "lr_x must be"), ({"lr_y": -1.0}, "lr_y must be"), ({"mu": float("nan")}, "mu must be"),
    ({"q": 0}, "q must be"), ({"q": 1.5}, "q must be"), ({"estimator": "spsa"}, "estimator='spsa'"),
    ({"direction": "x"}, "direction='x'"), ({"fo_optimizer": "lion"}, "fo_optimizer"),
    ({"momentum": 1.0}, "momentum"), ({"schedule": "linear"}, "needs total_steps"),
    ({"grad_accum": 0}, "grad_accum"), ({"weight_decay_x": -1}, "weight_decay_x"), ({"seed": -1}, "seed"),
])
def test_config_validation(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        ho.HybridConfig(**kwargs)


def test_config_dict_roundtrip_and_unknown_keys():
    cfg = ho.HybridConfig(lr_x=3e-4, betas=(0.8, 0.9))
    assert ho.HybridConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown optimizer option.*lr_z"):
        ho.HybridConfig.from_dict({"lr_z": 1})


def test_schedules():
    c = ho.HybridConfig(schedule="linear", total_steps=10, warmup_steps=2)
    assert [round(ho.lr_multiplier(c, t), 6) for t in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]
    c = ho.HybridConfig(schedule="cosine", total_steps=4)
    assert [round(ho.lr_multiplier(c, t), 6) for t in (0, 2, 4)] == [1.0, 0.5, 0.0]
    assert ho.lr_multiplier(ho.HybridConfig(), 10**6) == 1.0


def test_schedule_scales_both_learning_rates():
    prob, *_ = quadratic_problem()
    opt = ho.HybridOptimizer(prob, ho.HybridConfig(lr_x=0.1, lr_y=0.2, schedule="linear", total_steps=4))
    stats = [opt.step(torch.arange(3)) for _ in range(3)]
    assert [(round(s.lr_x, 12), round(s.lr_y, 12)) for s in stats] == [(0.1, 0.2), (0.075, 0.15), (0.05, 0.1)]


def test_weight_decay_by_structure():
    # decay applies to matrices (ndim >= 2), never to vectors such as biases / norms
    w, bvec = torch.ones(3, 3), torch.ones(3)
    prob = ho.TensorProblem(lambda xs, ys, b: 0 * xs[0].sum() + 0 * xs[1].sum(), [w, bvec], [], n=1)
    ho.HybridOptimizer(prob, ho.HybridConfig(lr_x=0.1, weight_decay_x=0.5)).step(torch.arange(1))
    assert torch.allclose(w, torch.full((3, 3), 0.95)) and torch.equal(bvec, torch.ones(3))


def test_train_stops_on_callback_and_checks_n():
    prob, *_ = quadratic_problem()
    opt = ho.HybridOptimizer(prob)
    tr = ho.train(opt, ho.RandomReshuffling(prob.n, 2), 10, callback=lambda s, e, t: len(t) == 3)
    assert len(tr) == 3
    with pytest.raises(ValueError, match="sampler has n"):
        ho.train(opt, ho.RandomReshuffling(prob.n + 1, 2), 1)
