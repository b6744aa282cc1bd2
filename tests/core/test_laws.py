"""The direction-law registry and the counter definition of a direction (every law gets every test)."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import hybridopt as ho
from hybridopt.directions import Directions
from hybridopt.laws import LAWS, get_law
from hybridopt.counter import words
from hybridopt.rng import direction_key, splitmix64
from hybridopt.sweep import SweepContext

ALL = list(LAWS)


def _ctx(chunk=1 << 22):
    return SweepContext(chunk_elements=chunk)


@pytest.mark.parametrize("law", ALL)
def test_second_moment_is_identity(law):
    """E[u uᵀ] = I (what makes ĝ an estimate of the gradient): unit variances, zero
    correlations, within 5 standard errors, over 4000 draws of a 6-dim direction."""
    p = [torch.zeros(6)]
    U = torch.stack([Directions(law, s, p, context=_ctx()).u(0, 0) for s in range(4000)]).double()
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
@given(start=st.integers(0, 1199), length=st.integers(1, 500))
def test_any_element_range_equals_the_slice_of_the_whole(law, start, length):
    """Element e is a pure function of (key, e), so a range (a chunk, a row) equals the same slice
    of the whole direction — whatever the consumer's chunking, odd starts and ends included."""
    p = [torch.zeros(30, 40)]
    d = Directions(law, 5, p, context=_ctx())
    whole = d.u(0, 0).view(-1)
    stop = min(start + length, whole.numel())
    start = min(start, stop - 1)
    part = torch.empty(stop - start)
    assert torch.equal(d.fill(0, 0, start, stop, part), whole[start:stop])


@pytest.mark.parametrize("law", ALL)
@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 97), width=st.integers(1, 50), chunk=st.integers(1, 700))
def test_a_chunked_sweep_draws_each_element_once(law, rows, width, chunk):
    """A sweep over the row chunks draws exactly the tensor and equals the whole direction, in any
    chunk geometry (odd row widths split a Gaussian pair between chunks)."""
    p = [torch.zeros(rows, width)]
    ctx = _ctx(chunk=chunk)
    d = Directions(law, 11, p, context=ctx)
    whole = Directions(law, 11, p, context=_ctx()).u(0, 0)
    ctx.counters.take()
    got = torch.cat([d.chunk(0, 0, a, b, torch.empty((b - a, width))) for a, b in d.plan(0)])
    drawn = ctx.counters.take()[0]
    assert torch.equal(got, whole)
    if not get_law(law).normalised:                 # the sphere's norm draw is one more pass
        assert drawn == rows * width


@pytest.mark.parametrize("law", ALL)
@settings(max_examples=25, deadline=None)
@given(factor=st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False), as_tensor=st.booleans(),
       start=st.integers(0, 900), length=st.integers(1, 600),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_a_scaled_draw_is_the_draw_times_the_factor_bit_for_bit(law, factor, as_tensor, start, length, dtype):
    """``fill(..., factor=c)`` (μ·u for a probe, the coefficient·u of an update) equals the draw
    followed by ``mul_(c)`` exactly, whether the kernel forms the product as it draws (float32)
    or it is taken after the draw (float64)."""
    p = [torch.zeros(40, 30, dtype=dtype)]
    d = Directions(law, 21, p, context=_ctx())
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
    d = Directions(law, 4, p, replicate_shape=(5,), context=_ctx())
    c = torch.tensor([0.5, -3.0, 1e-3, 7.25, -1.0]).reshape(5, 1, 1)
    ref = d.u(0, 0).mul_(c)
    assert torch.equal(d.u(0, 0, factor=c), ref)
    assert not torch.equal(ref, d.u(0, 0))


@pytest.mark.parametrize("law", ALL)
def test_rows_are_the_gathered_rows_and_draw_only_them(law):
    p = [torch.zeros(300, 48)]
    ctx = _ctx()
    d = Directions(law, 3, p, context=ctx)
    whole = d.u(0, 0)
    ids = torch.tensor([[5, 299, 5], [0, 150, 151]])
    ctx.counters.take()
    got = d.rows(0, 0, ids)
    assert torch.equal(got, whole[ids])
    assert ctx.counters.take()[3] == 5 * 48           # rows_drawn: the five distinct rows, once each


@settings(max_examples=200, deadline=None)
@given(key=st.integers(0, 2 ** 64 - 1), c=st.integers(0, 2 ** 62))
def test_words_are_splitmix64_of_the_counter(key, c):
    """word(c) = splitmix64(key + c·γ): the vectorised int64 form equals the scalar definition."""
    from hybridopt.counter import GAMMA, _signed
    got = int(words(key, torch.tensor([c]))[0])
    assert got == _signed(splitmix64((key + c * GAMMA) % 2 ** 64))


def test_the_key_is_the_mix_of_seed_probe_and_tensor():
    from hybridopt.rng import mix
    assert direction_key(77, 2, 5) == mix(77, 2, 5)
    assert len({direction_key(1, r, j) for r in range(8) for j in range(8)}) == 64


def test_rademacher_is_the_documented_bit_law():
    """Element e is -1 iff bit e mod 64 of word(⌊e/64⌋) is set (checked on scalar SplitMix64)."""
    from hybridopt.counter import GAMMA
    n = 200
    u = Directions("rademacher", 4, [torch.zeros(n)], context=_ctx()).u(0, 0)
    key = direction_key(4, 0, 0)
    w = [splitmix64((key + c * GAMMA) % 2 ** 64) for c in range(-(-n // 64))]
    ref = torch.tensor([-1.0 if (w[e // 64] >> (e % 64)) & 1 else 1.0 for e in range(n)])
    assert torch.equal(u, ref)


def test_gaussian_is_box_muller_of_the_documented_bits():
    """Elements 2c, 2c+1 are r cos θ, r sin θ with u1 = (top 24 bits + 1)/2²⁴, θ = 2π·(bottom 24
    bits)/2²⁴: float64 Box–Muller of the same words (scalar SplitMix64) agrees to float32 accuracy."""
    from hybridopt.counter import GAMMA
    n = 4000
    u = Directions("gaussian", 8, [torch.zeros(n)], context=_ctx()).u(0, 0).double()
    key = direction_key(8, 0, 0)
    ref = []
    for c in range(n // 2):
        w = splitmix64((key + c * GAMMA) % 2 ** 64)
        r = math.sqrt(-2 * math.log(((w >> 40) + 1) / 2 ** 24))
        th = 2 * math.pi * (w & 0xFFFFFF) / 2 ** 24
        ref += [r * math.cos(th), r * math.sin(th)]
    ref = torch.tensor(ref, dtype=torch.float64)
    assert ((u - ref).abs() <= 4e-7 * ref.abs().clamp(min=1.0)).all(), (u - ref).abs().max()


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
        Directions(law, 1, [torch.zeros(5000)], context=_ctx()).u(0, 0)
    assert torch.equal(torch.rand(3), a)


def test_box_muller_is_exact_to_a_float32_rounding_exhaustively():
    """Every one of the 2²⁴ radius inputs a (with b = 0, so z0 = r(a)) and every one of the 2²⁴
    angle inputs b (with a = 0, so (z0, z1) = R·(cos θ, sin θ)) agrees with float64 Box–Muller
    within 2e-7 relative (about one float32 rounding; the laws docstring reports 1.6e-7)."""
    from hybridopt.laws import box_muller
    R = math.sqrt(-2 * math.log(2.0 ** -24))                  # the radius of a = 0
    worst_r = worst_angle = 0.0
    for lo in range(0, 1 << 24, 1 << 22):
        v = torch.arange(lo, lo + (1 << 22), dtype=torch.int64)
        z0, _ = box_muller(v << 40)
        r = torch.sqrt(-2 * torch.log((v.double() + 1) * 2.0 ** -24))
        keep = r > 0                                           # a = 2²⁴ − 1: u1 = 1, r = 0 exactly
        assert (z0[~keep] == 0).all()
        worst_r = max(worst_r, float(((z0.double() - r).abs()[keep] / r[keep]).max()))
        c, s = box_muller(v)
        th = 2 * math.pi * v.double() * 2.0 ** -24
        worst_angle = max(worst_angle, float((c.double() - R * torch.cos(th)).abs().max() / R),
                          float((s.double() - R * torch.sin(th)).abs().max() / R))
    assert worst_r <= 2e-7 and worst_angle <= 2e-7, (worst_r, worst_angle)
