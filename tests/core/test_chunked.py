"""The chunk plan of large ZO tensors, the arena, and chunked probes/updates."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hybridopt as ho
from hybridopt.directions import Directions, Perturbation
from hybridopt.sweep import Arena, SweepContext


def small(chunk=2000):
    """A context whose chunk limit makes test-sized tensors take the chunked paths."""
    return SweepContext(chunk_elements=chunk)


@settings(deadline=None)
@given(rows=st.integers(1, 3000), row=st.integers(1, 200), limit=st.integers(1, 5000))
def test_row_chunks_cover_the_rows_within_the_limit(rows, row, limit):
    plan = SweepContext(chunk_elements=limit).row_chunks(torch.Size([rows, row]))
    assert plan[0][0] == 0 and plan[-1][1] == rows
    assert all(b0 == a1 for (_, b0), (a1, _) in zip(plan, plan[1:]))  # contiguous, in order
    if rows * row <= limit:
        assert plan == [(0, rows)]
    assert all((b - a) * row <= max(limit, row) for a, b in plan)     # at least one row a chunk


def test_arena_leases_are_stacked_and_never_overlap():
    arena = Arena()
    a = arena.lease("a", (10,), torch.float32, "cpu")
    b = arena.lease("b", (5, 2), torch.float32, "cpu")
    a.tensor.fill_(1)
    b.tensor.fill_(2)
    assert a.tensor.sum() == 10 and b.tensor.sum() == 20            # disjoint
    with pytest.raises(AssertionError, match="out of order"):
        a.release()
    c = arena.lease("c", (100,), torch.float32, "cpu")               # grows while a and b are live
    c.tensor.fill_(3)
    assert a.tensor.sum() == 10 and b.tensor.sum() == 20
    c.release(), b.release(), a.release()
    assert arena.live() == []
    with arena.lease("d", (100,), torch.float32, "cpu") as t:        # the grown buffer is reused
        assert t.numel() == 100
    with pytest.raises(AssertionError, match="live leases"):
        arena.lease("e", (1,), torch.float32, "cpu")
        arena.clear()


class TiedLM(torch.nn.Module):
    """Embedding -> Linear -> LayerNorm -> head tied to the embedding (an LLM in miniature)."""

    def __init__(self, vocab=300, hidden=32, tied=True):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.mid = torch.nn.Linear(hidden, 96)
        self.norm = torch.nn.LayerNorm(96)
        self.down = torch.nn.Linear(96, hidden)
        self.head = torch.nn.Linear(hidden, vocab, bias=False)
        if tied:
            self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(self.down(torch.tanh(self.norm(self.mid(self.embed(ids))))))


def _lm_problem(tied, dtype=torch.float32):
    torch.manual_seed(0)
    model = TiedLM(tied=tied).to(dtype)
    data = torch.randint(0, 300, (16, 9))

    def loss_fn(m, batch):
        ids = data[batch]
        logits = m(ids[:, :-1]).float()
        return torch.nn.functional.cross_entropy(logits.reshape(-1, 300), ids[:, 1:].reshape(-1))

    params = list(dict.fromkeys(model.parameters()))
    return ho.ModuleProblem(model, loss_fn, params, [], n=16), model


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_chunked_probe_equals_whole_probe(tied, kind):
    """A probe through the chunked Linear/Embedding forwards gives the loss of the whole-tensor
    probe (up to matmul blocking) and leaves the weights bit-identical."""
    batch = torch.arange(8)
    prob, model = _lm_problem(tied)
    d = Directions(kind, 11, prob.zo_params)
    whole = prob.loss(batch, Perturbation(d, 0, 1e-2))
    prob, model = _lm_problem(tied)
    prob.bind(small())
    assert {type(m).__name__ for m in prob.chunked} == {"Embedding", "Linear"}
    before = [p.clone() for p in prob.zo_params]
    d = Directions(kind, 11, prob.zo_params, context=prob.context)
    chunked = prob.loss(batch, Perturbation(d, 0, 1e-2))
    assert torch.allclose(chunked, whole, rtol=1e-6, atol=0)
    assert all(torch.equal(a, b) for a, b in zip(before, prob.zo_params))
    assert all("forward" not in m.__dict__ for m in model.modules())  # temporary forwards removed
    # the chunked probe is a real probe: another scale gives another loss
    assert not torch.equal(prob.loss(batch, Perturbation(d, 0, 1e-1)), chunked)


def test_chunked_probe_scratch_stays_chunk_sized():
    prob, _ = _lm_problem(tied=True)
    ctx = small()
    big = max(p.numel() for p in prob.zo_params)
    assert big > 4 * ctx.chunk_elements
    opt = ho.HybridOptimizer(prob, ho.HybridConfig(lr_x=1e-3, mu=1e-2, seed=1), cache_directions=False, context=ctx)
    for _ in range(2):
        opt.step(torch.arange(8))
    opt.flush()
    # the arena never held a whole copy of the big (tied) matrix: a few chunk-sized leases at most
    assert ctx.arena.nbytes() < 0.5 * big * 4


@pytest.mark.parametrize("q", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_steps_equal_whole_steps(q, dtype):
    """Whole optimizer runs with and without chunking agree: the weights bit for bit given the same
    coefficients (the update is elementwise), the projected gradients to matmul blocking."""
    cfg = ho.HybridConfig(lr_x=1e-2, mu=1e-2, q=q, seed=2)

    def run(ctx):
        prob, _ = _lm_problem(tied=True, dtype=dtype)
        opt = ho.HybridOptimizer(prob, cfg, cache_directions=False, context=ctx)
        stats = [opt.step(torch.arange(8)) for _ in range(3)]
        opt.flush()
        return prob, opt, stats

    prob0, opt0, stats0 = run(SweepContext())
    prob1, opt1, stats1 = run(small())
    for a, b in zip(stats0, stats1):
        assert torch.allclose(a.projected, b.projected, rtol=1e-3, atol=1e-4)
    for ctx in (small(), SweepContext()):   # the chunked run's log replayed, chunked or whole
        init, _ = _lm_problem(tied=True, dtype=dtype)
        ho.replay_zo_log(init.zo_params, opt1.zo_log, cfg, context=ctx)
        assert all(torch.equal(a, b) for a, b in zip(init.zo_params, prob1.zo_params))
