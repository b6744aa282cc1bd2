"""Chunk plan of large ZO tensors, the bit-packed Rademacher law, and chunked probes/updates."""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import hybridopt as ho
from hybridopt import directions as D
from hybridopt.directions import WORKSPACE, Directions, Perturbation, row_chunks


@pytest.fixture
def small_chunks(monkeypatch):
    """A chunk limit of 2000 elements, so test-sized tensors take the chunked paths."""
    monkeypatch.setattr(D, "CHUNK_ELEMENTS", 2000)
    WORKSPACE.clear()
    yield 2000
    WORKSPACE.clear()


@given(rows=st.integers(1, 3000), row=st.integers(1, 200), limit=st.integers(1, 5000))
def test_row_chunks_cover_rows_in_word_multiples(rows, row, limit):
    plan = row_chunks(torch.Size([rows, row]), limit)
    assert plan[0][0] == 0 and plan[-1][1] == rows
    assert all(b0 == a1 for (_, b0), (a1, _) in zip(plan, plan[1:]))  # contiguous, in order
    if rows * row <= limit:
        assert plan == [(0, rows)]
    if len(plan) > 1:
        assert all((b - a) * row % 64 == 0 for a, b in plan[:-1])
        assert (plan[-1][1] - plan[-1][0]) * row >= 64
        step = 64 // math.gcd(row, 64)
        assert all((b - a) <= max(step, limit // row) + step for a, b in plan)


def _reference_rademacher(seed, n):
    """The documented law: u_i = -1 iff bit (i mod 8) of byte floor(i/8) of the stream is set,
    the stream being ceil(n/64) random 64-bit words (full int64 range) from the tensor's generator."""
    g = torch.Generator().manual_seed(seed)
    words = torch.empty(-(-n // 64), dtype=torch.int64).random_(-2 ** 63, None, generator=g)
    stream = words.view(torch.uint8).long()
    i = torch.arange(n)
    bit = (stream[i // 8] >> (i % 8)) & 1
    return 1.0 - 2.0 * bit.float()


@pytest.mark.parametrize("n", [1, 7, 8, 9, 63, 64, 65, 1000, 4096])
def test_rademacher_is_the_documented_bit_law(n):
    u = D.draw_direction("rademacher", 7, torch.Size([n]), torch.float32, torch.device("cpu"))
    assert torch.equal(u, _reference_rademacher(7, n))


def test_rademacher_law_is_balanced():
    u = D.draw_direction("rademacher", 3, torch.Size([1 << 16]), torch.float32, torch.device("cpu"))
    assert set(u.unique().tolist()) == {-1.0, 1.0}
    assert abs(u.mean().item()) < 5 / 256  # 5 sigma for 2^16 fair signs
    # neighbouring signs are independent (a repeated bit would correlate them)
    assert abs((u.view(-1, 64)[:, 0] * u.view(-1, 64)[:, 1]).mean().item()) < 5 / 32


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
@pytest.mark.parametrize("shape", [(1000, 37), (999, 64), (7, 3000)])
def test_chunked_draw_equals_whole_draw(kind, shape, monkeypatch):
    """On CPU the chunk plan does not change the direction: chunks drawn in sequence from the
    tensor's generator concatenate to the whole-tensor draw."""
    p = torch.randn(*shape)
    whole = Directions(kind, 3, [p]).u(0, 0)
    monkeypatch.setattr(D, "CHUNK_ELEMENTS", 2000)
    d = Directions(kind, 3, [p])
    assert len(d.plan(0)) > 1 or shape[0] == 7
    chunked = torch.cat([u.clone().view(b - a, *shape[1:]) for a, b, u in d.chunks(0, 0, WORKSPACE)])
    assert torch.equal(chunked, whole)
    assert torch.equal(d.u(0, 0), whole)


@pytest.mark.parametrize("kind", ["gaussian", "rademacher", "sphere"])
def test_rows_and_perturbation_chunks_match_the_whole_tensor(kind, small_chunks):
    p = torch.randn(999, 64)
    d = Directions(kind, 5, [p])
    u = d.u(0, 0)
    assert len(d.plan(0)) > 2
    edges = [b for _, b in d.plan(0)[:2]]  # rows on both sides of chunk boundaries, repeats, the ends
    idx = torch.tensor([[3, 998], [0, 3], [edges[0] - 1, edges[0]], [edges[1], 997]])
    assert torch.equal(d.rows(0, 0, idx), u[idx])
    pert = Perturbation(d, 0, 0.25)
    full = pert.apply(0, p)
    assert torch.equal(torch.cat([w.clone() for _, _, w in pert.chunks(0, p)]), full)
    assert torch.equal(pert.rows(0, p, idx), full[idx])
    if kind == "sphere":  # the normalisation is over the whole tensor, not per chunk
        assert torch.allclose(u.pow(2).sum(), torch.tensor(float(p.numel())), rtol=1e-5)


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
def test_chunked_probe_equals_whole_probe(tied, kind, monkeypatch):
    """A probe through the chunked Linear/Embedding forwards gives the loss of the whole-tensor
    probe (up to matmul blocking) and leaves the weights bit-identical."""
    batch = torch.arange(8)
    prob, model = _lm_problem(tied)
    d = Directions(kind, 11, prob.zo_params)
    with torch.no_grad():
        whole = prob.loss(batch, Perturbation(d, 0, 1e-2))
    monkeypatch.setattr(D, "CHUNK_ELEMENTS", 2000)
    prob, model = _lm_problem(tied)
    assert {type(m).__name__ for m in prob._chunked} == {"Embedding", "Linear"}
    before = [p.clone() for p in prob.zo_params]
    d = Directions(kind, 11, prob.zo_params)
    with torch.no_grad():
        chunked = prob.loss(batch, Perturbation(d, 0, 1e-2))
    assert torch.allclose(chunked, whole, rtol=1e-6, atol=0)
    assert all(torch.equal(a, b) for a, b in zip(before, prob.zo_params))
    assert all("forward" not in m.__dict__ for m in model.modules())  # temporary forwards removed
    # the chunked probe is a real probe: another scale gives another loss
    with torch.no_grad():
        assert not torch.equal(prob.loss(batch, Perturbation(d, 0, 1e-1)), chunked)


def test_chunked_probe_workspace_stays_chunk_sized(small_chunks):
    prob, _ = _lm_problem(tied=True)
    big = max(p.numel() for p in prob.zo_params)
    assert big > 4 * small_chunks
    opt = ho.HybridOptimizer(prob, ho.HybridConfig(lr_x=1e-3, mu=1e-2, seed=1), cache_directions=False)
    opt.step(torch.arange(8))
    # every scratch buffer is at most one chunk: no slot is laid out for a chunked weight
    assert max(b.numel() for b in WORKSPACE._bufs.values()) <= small_chunks


@pytest.mark.parametrize("q", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_step_equals_whole_step(q, dtype, monkeypatch):
    """Whole optimizer steps (probes + update sweep) with and without chunking agree: the
    update is bit-identical given the same coefficients, the losses to matmul blocking."""
    cfg = ho.HybridConfig(lr_x=1e-2, mu=1e-2, q=q, seed=2)

    def run():
        prob, _ = _lm_problem(tied=True, dtype=dtype)
        opt = ho.HybridOptimizer(prob, cfg, cache_directions=False)
        stats = [opt.step(torch.arange(8)) for _ in range(2)]
        return prob, opt, stats

    prob0, opt0, stats0 = run()
    monkeypatch.setattr(D, "CHUNK_ELEMENTS", 2000)
    prob1, opt1, stats1 = run()
    for a, b in zip(stats0, stats1):
        assert torch.allclose(a.projected, b.projected, rtol=1e-3, atol=1e-4)
    # replaying the chunked run's own log on the initial weights is bit-identical
    init, _ = _lm_problem(tied=True, dtype=dtype)
    ho.replay_zo_log(init.zo_params, opt1.zo_log, cfg)
    assert all(torch.equal(a, b) for a, b in zip(init.zo_params, prob1.zo_params))
    # and the unchunked update with the chunked run's coefficients gives the same weights
    monkeypatch.setattr(D, "CHUNK_ELEMENTS", 1 << 22)
    init, _ = _lm_problem(tied=True, dtype=dtype)
    ho.replay_zo_log(init.zo_params, opt1.zo_log, cfg)
    assert all(torch.equal(a, b) for a, b in zip(init.zo_params, prob1.zo_params))


def test_grad_enabled_probe_falls_back_to_whole_swaps(small_chunks):
    prob, model = _lm_problem(tied=True)
    d = Directions("gaussian", 1, prob.zo_params)
    with torch.enable_grad():
        a = prob.loss(torch.arange(4), Perturbation(d, 0, 1e-2))
    with torch.no_grad():
        b = prob.loss(torch.arange(4), Perturbation(d, 0, 1e-2))
    assert torch.allclose(a, b, rtol=1e-6)
