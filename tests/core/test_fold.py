"""The update folded into the next sweep: bit-identical to applying it at once, flushed before
anyone else reads the weights, and one pass over the ZO block per step."""
import pytest
import torch

import hybridopt as ho
from hybridopt.sweep import SweepContext

from .helpers import lora_problem
from .test_chunked import _lm_problem


def _run(method, fold, q=1, accum=1, law="gaussian", estimator="paired", steps=6, dtype=torch.float32,
         rule="sgd", ctx=None):
    prob, base, adapter = lora_problem(method, dtype=dtype)
    cfg = ho.HybridConfig(lr_x=1e-2, lr_y=1e-2, mu=1e-2, q=q, grad_accum=accum, direction=law,
                          estimator=estimator, weight_decay_x=0.1, zo_rule=rule, seed=5)
    opt = ho.HybridOptimizer(prob, cfg, fold_updates=fold, cache_directions=False, context=ctx)
    tr = ho.train(opt, ho.RandomReshuffling(prob.n, 6, seed=1), steps)
    return tr, [p.detach().clone() for p in base + adapter], opt, prob


@pytest.mark.parametrize("method", ho.METHODS)
@pytest.mark.parametrize("q,accum", [(1, 1), (2, 1), (1, 3)])
@pytest.mark.parametrize("law", ["gaussian", "rademacher"])
def test_folded_updates_equal_eager_updates_bit_for_bit(method, q, accum, law):
    fa, wa, *_ = _run(method, True, q, accum, law)
    fb, wb, *_ = _run(method, False, q, accum, law)
    assert fa.losses == fb.losses
    assert all(torch.equal(a, b) for a, b in zip(wa, wb))


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_folding_into_chunked_and_row_reads_is_exact(tied, dtype):
    """Chunked Linear updates inside the probe sweep, embedding rows read out of place before the
    (tied) head writes the matrix: the same bits as an eager update."""
    def run(fold):
        prob, model = _lm_problem(tied, dtype)
        opt = ho.HybridOptimizer(prob, ho.HybridConfig(lr_x=1e-2, mu=1e-2, seed=3), fold_updates=fold,
                                 cache_directions=False, context=SweepContext(chunk_elements=2000))
        tr = ho.train(opt, ho.RandomReshuffling(16, 4, seed=0), 5)
        return tr.losses, [p.clone() for p in prob.zo_params]

    (la, wa), (lb, wb) = run(True), run(False)
    assert la == lb and all(torch.equal(a, b) for a, b in zip(wa, wb))


def test_a_pending_update_is_flushed_before_any_other_read():
    prob, base, adapter = lora_problem("zo-full")
    opt = ho.HybridOptimizer(prob, ho.HybridConfig(lr_x=1e-2, mu=1e-2, seed=1))
    X = torch.randn(3, 6)
    opt.step(torch.arange(6))
    stale = [p.clone() for p in prob.zo_params]
    assert prob.pending is not None                                   # folded: not yet written
    assert all(torch.equal(a, b) for a, b in zip(stale, prob.zo_params))
    out = prob.model(X)                                               # an evaluation flushes first
    assert prob.pending is None and not all(torch.equal(a, b) for a, b in zip(stale, prob.zo_params))
    assert torch.equal(out, prob.model(X))
    assert not any(m._forward_pre_hooks or m._state_dict_pre_hooks for m in prob.model.modules())

    opt.step(torch.arange(6))
    stale = [p.clone() for p in prob.zo_params]
    sd = prob.model.state_dict()                                      # so does state_dict()
    assert prob.pending is None
    assert not all(torch.equal(a, b) for a, b in zip(stale, prob.zo_params))
    assert all(torch.equal(sd[k], v) for k, v in prob.model.state_dict().items())

    opt.step(torch.arange(6))
    opt.state_dict()                                                  # and the optimizer's state
    assert prob.pending is None
    opt.step(torch.arange(6))
    opt.close()                                                       # and close()
    assert prob.pending is None
    assert not any(m._forward_pre_hooks or m._state_dict_pre_hooks for m in prob.model.modules())


def test_the_trace_of_train_ends_with_the_weights_written():
    _, weights, opt, prob = _run("hybrid", True)
    assert prob.pending is None
    assert all(torch.equal(a, b.detach()) for a, b in zip(weights, prob.zo_params + prob.fo_params)
               if a.shape == b.shape)


def test_a_step_draws_each_direction_twice_and_passes_once():
    """q = 1, paired, folded: draws 2 (the probe pair, the update's regeneration), writes 1,
    passes 1 (the probe sweep writes the previous update); MeZO's published step: 4 passes.
    Embedding lookups draw and read only their rows, counted apart."""
    prob, _ = _lm_problem(tied=False)
    ctx = SweepContext(chunk_elements=2000)   
    opt = ho.HybridOptimizer(prob, ho.HybridConfig(lr_x=1e-3, mu=1e-2, seed=1), cache_directions=False,
                             context=ctx)
    numel = sum(p.numel() for p in prob.zo_params)
    embed = prob.model.embed.weight.numel() / numel
    rows = 2 * 8 * 8 * 32 / numel                                        # lookups: 8 x 8 rows, both halves
    first = opt.step(torch.arange(8))
    assert first.zo_writes == 0.0                                        # nothing was pending yet
    assert first.zo_draws == pytest.approx(1.0 - embed)                  # the untied lookup: rows only
    assert 0 < first.zo_row_draws < embed and first.zo_row_reads == pytest.approx(rows)
    s = opt.step(torch.arange(8))
    assert (s.zo_writes, s.zo_passes) == (1.0, pytest.approx(1.0))
    assert s.zo_draws == pytest.approx(first.zo_draws + 1.0)             # + the update's regeneration
    assert s.zo_row_draws == pytest.approx(2 * first.zo_row_draws)       # the lookups read updated rows
    central = ho.HybridOptimizer(prob, ho.HybridConfig(lr_x=1e-3, mu=1e-2, estimator="central", seed=1),
                                 cache_directions=False, context=ctx)
    central.step(torch.arange(8))
    c = central.step(torch.arange(8))
    assert c.zo_passes == pytest.approx(2.0 - embed)                      # the 2nd sweep: lookups only
    assert c.zo_draws == pytest.approx(2 * (1.0 - embed) + 1.0)
    eager = ho.HybridOptimizer(prob, ho.HybridConfig(lr_x=1e-3, mu=1e-2, seed=1), cache_directions=False,
                               fold_updates=False, context=ctx)
    eager.step(torch.arange(8))
    e = eager.step(torch.arange(8))
    assert e.zo_passes == pytest.approx(2.0 - embed)                      # probe sweep + update sweep


@pytest.mark.parametrize("estimator", ["paired", "central"])
def test_an_interrupted_sweep_leaves_a_consistent_update(estimator):
    """A forward that fails half-way through a sweep (after the embedding and the first Linear
    have applied their part of the pending update): no chunk is updated twice, nothing leaks."""
    prob, model = _lm_problem(tied=False)
    ctx = SweepContext(chunk_elements=2000)
    cfg = ho.HybridConfig(lr_x=1e-2, mu=1e-2, estimator=estimator, seed=4)
    opt = ho.HybridOptimizer(prob, cfg, cache_directions=False, context=ctx)
    opt.step(torch.arange(8))
    ref, _ = _lm_problem(tied=False)
    ho.replay_zo_log(ref.zo_params, opt.zo_log, opt.config)

    def interrupt(module, args):
        raise KeyboardInterrupt

    handle = model.norm.register_forward_pre_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        opt.step(torch.arange(8))
    handle.remove()
    assert ctx.arena.live() == [] and all("forward" not in m.__dict__ for m in model.modules())
    assert not prob.pending.done and not prob.pending.untouched(1)     # half-applied
    opt.flush()
    assert all(torch.equal(a, b) for a, b in zip(ref.zo_params, prob.zo_params))
