"""The direction-law registry and the block definition of a direction (every law gets every test)."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import hybridopt as ho
from hybridopt.directions import Directions
from hybridopt.laws import LAWS, get_law
from hybridopt.rng import block_seed
from hybridopt.sweep import SweepContext

ALL = list(LAWS)


def _ctx(block=64, threads=1, chunk=1 << 22):
    return SweepContext(chunk_elements=chunk, threads=threads, block={"cpu": block})


@pytest.mark.parametrize("law", ALL)
def test_second_moment_is_identity(law):
    """E[u uᵀ] = I (what makes ĝ an estimate of the gradient): unit variances, zero
    correlations, within 5 standard errors, over 4000 draws of a 6-dim direction."""
    p = [torch.zeros(6)]
    U = torch.stack([Directions(law, s, p, context=_ctx(block=4)).u(0, 0) for s in range(4000)]).double()
    P = U[:, :, None] * U[:, None, :]                       # (draws, 6, 6): u_i u_j
    se = P.std(0) / len(U) ** 0.5                           # entrywise (0 for Rademacher's u_i² = 1)
    dev = (P.mean(0) - torch.eye(6, dtype=torch.float64)).abs()
    assert (dev <= 5 * 1.5 * se + 1e-12).all(), dev          # 1.5 ~ Bonferroni over 21 entries


@pytest.mark.parametrize("law", ALL)
def test_a_direction_is_a_pure_function_of_its_seed(law):
    ps = [torch.zeros(300, 40), torch.zeros(7)]
    a = Directions(law, 1, ps, q=2, context=_ctx())
    b = Directions(law, 1, ps, q=2, context=_ctx())
    assert torch.equal(a.u(0, 0), b.u(0, 0)) and torch.equal(a.u(1, 1), b.u(1, 1))
    assert not torch.equal(a.u(0, 0), a.u(1, 0))                    # probes independent
    assert not torch.equal(a.u(0, 0), Directions(law, 2, ps, context=_ctx()).u(0, 0))


@pytest.mark.parametrize("law", ALL)
@settings(max_examples=25, deadline=None)
@given(start=st.integers(0, 700), length=st.integers(1, 500), block=st.sampled_from([1, 7, 64, 100, 4096]))
def test_any_element_range_equals_the_slice_of_the_whole(law, start, length, block):
    """Block b is drawn from its own generator, so a range (a chunk, a row) needs only its blocks
    and equals the same slice of the whole direction — whatever the consumer's chunking."""
    p = [torch.zeros(30, 40)]
    d = Directions(law, 5, p, context=_ctx(block=block))
    whole = d.u(0, 0).view(-1)
    stop = min(start + length, whole.numel())
    start = min(start, stop - 1)
    part = torch.empty(stop - start)
    assert torch.equal(d.fill(0, 0, start, stop, part), whole[start:stop])


@pytest.mark.parametrize("law", ALL)
@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 2000), block=st.sampled_from([7, 64, 192, 1024]), seed=st.integers(0, 2 ** 40))
def test_a_run_of_blocks_equals_its_blocks_drawn_one_by_one(law, n, block, seed):
    """``fill_blocks`` (one call per run of whole blocks, which a law may batch) gives exactly the
    values of :meth:`fill` on each block from its own generator: a law's speed-up never changes the
    stream.  Checked against the definition, block seeds included, through the whole direction."""
    impl = get_law(law)
    seeds = [block_seed(seed, 0, 0, b) for b in range(-(-n // block))]
    ref = torch.empty(n)
    for b, s in enumerate(seeds):
        impl.fill(ref[b * block:(b + 1) * block], torch.Generator().manual_seed(s), SweepContext().tables)
    run = torch.empty(n)
    impl.fill_blocks(run, block, lambda b: torch.Generator().manual_seed(seeds[b]), SweepContext().tables)
    assert torch.equal(run, ref)
    if not impl.normalised:  # the sphere law rescales the whole direction afterwards
        d = Directions(law, seed, [torch.zeros(n)], context=_ctx(block=block, threads=2))
        assert torch.equal(d.u(0, 0), ref)


@pytest.mark.parametrize("law", ALL)
@pytest.mark.parametrize("threads", [1, 2])
@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 97), width=st.integers(1, 50), chunk=st.integers(1, 700),
       block=st.sampled_from([7, 64, 100, 1000]))
def test_a_chunked_sweep_draws_each_element_once(law, threads, rows, width, chunk, block):
    """Chunks rarely end on block boundaries: the cut block is drawn whole once and its rest
    serves the next chunk, so a sweep over the row chunks draws exactly the tensor (not one block
    more per chunk) and equals the whole direction, in any chunk and block geometry."""
    p = [torch.zeros(rows, width)]
    ctx = _ctx(block=block, threads=threads, chunk=chunk)
    d = Directions(law, 11, p, context=ctx)
    whole = Directions(law, 11, p, context=_ctx(block=block)).u(0, 0)
    ctx.counters.take()
    got = torch.cat([d.chunk(0, 0, a, b, torch.empty((b - a, width))) for a, b in d.plan(0)])
    drawn = ctx.counters.take()[0]
    assert torch.equal(got, whole)
    if not get_law(law).normalised:                 # the sphere's norm draw is one more pass
        assert drawn == rows * width
    assert len(d._cut) == 0                          # nothing left behind by a complete sweep


@pytest.mark.parametrize("law", ALL)
@settings(max_examples=25, deadline=None)
@given(factor=st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False), as_tensor=st.booleans(),
       start=st.integers(0, 900), length=st.integers(1, 600), block=st.sampled_from([64, 128, 1000]),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_a_scaled_draw_is_the_draw_times_the_factor_bit_for_bit(law, factor, as_tensor, start, length, block, dtype):
    """``fill(..., factor=c)`` (μ·u for a probe, the coefficient·u of an update) equals the draw
    followed by ``mul_(c)`` exactly, whether the law folds the factor into its draw (Rademacher:
    a scaled sign table) or multiplies after it; cut blocks and whole runs alike."""
    p = [torch.zeros(40, 30, dtype=dtype)]
    d = Directions(law, 21, p, context=_ctx(block=block))
    stop = min(start + length, p[0].numel())
    start = min(start, stop - 1)
    c = torch.tensor(factor, dtype=dtype) if as_tensor else factor
    ref = d.fill(0, 0, start, stop, torch.empty(stop - start, dtype=dtype)).mul_(c)
    got = d.fill(0, 0, start, stop, torch.empty(stop - start, dtype=dtype), factor=c)
    assert torch.equal(got, ref)


@pytest.mark.parametrize("law", ALL)
def test_a_per_replicate_factor_is_the_draw_times_the_factors(law):
    """A factor with one coefficient per replicate (the update of replicate-batched runs) broadcasts
    over the replicate's elements, bit for bit the draw followed by ``mul_``."""
    p = [torch.zeros(5, 7, 3)]
    d = Directions(law, 4, p, replicate_shape=(5,), context=_ctx(block=16))
    c = torch.tensor([0.5, -3.0, 1e-3, 7.25, -1.0]).reshape(5, 1, 1)
    ref = d.u(0, 0).mul_(c)
    assert torch.equal(d.u(0, 0, factor=c), ref)
    assert not torch.equal(ref, d.u(0, 0))


@pytest.mark.parametrize("law", ALL)
def test_draw_threads_change_no_value(law):
    p = [torch.zeros(512, 64)]
    one = Directions(law, 9, p, context=_ctx(block=256, threads=1)).u(0, 0)
    two = Directions(law, 9, p, context=_ctx(block=256, threads=2)).u(0, 0)
    assert torch.equal(one, two)


@pytest.mark.parametrize("law", ALL)
@pytest.mark.parametrize("block", [64, 1000, 1 << 15])
def test_rows_are_the_gathered_rows_and_draw_only_their_blocks(law, block):
    p = [torch.zeros(300, 48)]
    ctx = _ctx(block=block)
    d = Directions(law, 3, p, context=ctx)
    whole = d.u(0, 0)
    ids = torch.tensor([[5, 299, 5], [0, 150, 151]])
    ctx.counters.take()
    got = d.rows(0, 0, ids)
    assert torch.equal(got, whole[ids])
    drawn = ctx.counters.take()[3]  # rows_drawn
    need = {b for r in ids.flatten().tolist() for b in range(r * 48 // block, ((r + 1) * 48 - 1) // block + 1)}
    assert drawn == sum(min((b + 1) * block, p[0].numel()) - b * block for b in need)
    if law != "sphere":  # sphere rows need the norm draw of the whole direction
        assert drawn < p[0].numel() or block >= p[0].numel()


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2 ** 64 - 1), probe=st.integers(0, 64), index=st.integers(0, 5000),
       block=st.integers(0, 2 ** 40))
def test_block_seeds_are_the_mix_of_their_counters(seed, probe, index, block):
    """The shared-prefix seeds (computed once per tensor) are the definition's hash of
    (seed, probe, tensor, block), block 0 keeping the tensor's seed."""
    from hybridopt.rng import mix, tensor_seed
    want = tensor_seed(seed, probe, index) if block == 0 else mix(seed, probe, index, block)
    assert block_seed(seed, probe, index, block) == want


def test_block_zero_keeps_the_tensor_seed():
    """A tensor of one block draws exactly the stream of one generator seeded with tensor_seed."""
    p = [torch.zeros(10, 3)]
    u = Directions("gaussian", 77, p, context=_ctx(block=64)).u(0, 0)
    g = torch.Generator().manual_seed(block_seed(77, 0, 0, 0))
    assert torch.equal(u, torch.empty(10, 3).normal_(generator=g))


def test_rademacher_is_the_documented_bit_law():
    """Element i is -1 iff bit i mod 8 of byte i // 8 of the block's random 64-bit words is set."""
    n = 200
    u = Directions("rademacher", 4, [torch.zeros(n)], context=_ctx(block=1 << 15)).u(0, 0)
    g = torch.Generator().manual_seed(block_seed(4, 0, 0, 0))
    words = torch.empty(-(-n // 64), dtype=torch.int64).random_(-2 ** 63, None, generator=g)
    by = words.view(torch.uint8).tolist()
    ref = torch.tensor([-1.0 if (by[i // 8] >> (i % 8)) & 1 else 1.0 for i in range(n)])
    assert torch.equal(u, ref)


def test_sphere_has_radius_sqrt_d_over_the_whole_block():
    ps = [torch.zeros(300, 40), torch.zeros(7)]
    sph = Directions("sphere", 1, ps, context=_ctx())
    sq = sum(sph.u(0, j).double().pow(2).sum() for j in range(2))
    assert math.isclose(float(sq), 300 * 40 + 7, rel_tol=1e-5)
    rep = Directions("sphere", 1, [torch.zeros(4, 50)], replicate_shape=(4,), context=_ctx())
    assert torch.allclose(rep.u(0, 0).double().pow(2).sum(-1), torch.full((4,), 50.0, dtype=torch.float64))


def test_unknown_law_fails_loudly():
    with pytest.raises(ValueError, match="unknown direction law 'cauchy'"):
        get_law("cauchy")
    with pytest.raises(ValueError, match="unknown direction law"):
        Directions("cauchy", 1, [torch.zeros(3)])
    with pytest.raises(ValueError, match="direction='cauchy' is not valid"):
        ho.HybridConfig(direction="cauchy")


def test_only_the_gaussian_is_the_theorems():
    assert [n for n, law in LAWS.items() if law.theorem] == ["gaussian"]


@pytest.mark.parametrize("law", ALL)
def test_float64_tensors_get_float64_draws_unless_asked(law):
    p = [torch.zeros(20, dtype=torch.float64)]
    assert Directions(law, 1, p).u(0, 0).dtype == torch.float64
    assert Directions(law, 1, p, dtype="float32").u(0, 0).dtype == torch.float32
    assert Directions(law, 1, [torch.zeros(20, dtype=torch.bfloat16)]).u(0, 0).dtype == torch.float32


def test_directions_never_touch_the_global_rng():
    torch.manual_seed(5)
    a = torch.rand(3)
    torch.manual_seed(5)
    for law in ALL:
        Directions(law, 1, [torch.zeros(5000)], context=_ctx(block=100, threads=2)).u(0, 0)
    assert torch.equal(torch.rand(3), a)
