"""The counter-based generator: the compiled kernel and the torch reference give the same bits,
fused operations equal the separate ones, and a run is the same with and without the kernel."""
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings, strategies as st

import hybridopt as ho
from hybridopt import counter
from hybridopt.directions import Directions
from hybridopt.laws import LAWS
from hybridopt.sweep import SweepContext

from .helpers import lora_problem
from .test_chunked import _lm_problem

KERNEL_LAWS = [name for name, law in LAWS.items() if law.kernel is not None and not law.normalised]
needs_kernel = pytest.mark.skipif(counter.kernel() is None, reason=f"no compiled kernel: {counter.why_not()}")
KEYS = st.integers(0, 2 ** 64 - 1)


def _ref(law, key, start, n):
    return LAWS[law].reference(key, torch.arange(start, start + n))


@needs_kernel
@pytest.mark.parametrize("law", KERNEL_LAWS)
@settings(max_examples=40, deadline=None)
@given(key=KEYS, start=st.one_of(st.integers(0, 5000), st.integers(2 ** 32 - 70, 2 ** 40)),
       n=st.integers(1, 3000), factor=st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False))
def test_kernel_fill_equals_the_reference_bit_for_bit(law, key, start, n, factor):
    """Odd starts and ends (half a Gaussian pair, part of a Rademacher word), counters past 2³²,
    and the factor formed in the draw: the same float32 bits as the reference times the factor."""
    got = LAWS[law].fill(torch.empty(n), key, start, factor)
    want = _ref(law, key, start, n).mul_(factor)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))


@needs_kernel
@pytest.mark.parametrize("law", KERNEL_LAWS)
def test_kernel_fill_equals_the_reference_on_a_parallel_range(law):
    """A range long enough for the kernel's threads (and a reference split into pieces)."""
    n = counter.REFERENCE_PIECE + 12345
    got = LAWS[law].fill(torch.empty(n), 987654321, 3)
    with counter.reference_only():
        want = LAWS[law].fill(torch.empty(n), 987654321, 3)
    assert torch.equal(got, want)


@needs_kernel
@pytest.mark.parametrize("law", KERNEL_LAWS)
@settings(max_examples=25, deadline=None)
@given(key=KEYS, start=st.integers(0, 10 ** 6), n=st.integers(1, 2000),
       mu=st.floats(1e-6, 10, allow_subnormal=False))
def test_fused_pair_and_axpy_equal_the_separate_operations(law, key, start, n, mu):
    """w ± μu in one pass = (w + su, w − su) with su = μ·u rounded once; p + c·u in one pass =
    p + (c·u rounded once): the fused sweep holds the weights the unfused one would."""
    w = torch.randn(n, generator=torch.Generator().manual_seed(start))
    su = _ref(law, key, start, n).mul_(mu)
    plus, minus = torch.empty(n), torch.empty(n)
    LAWS[law].pair(w, plus, minus, key, start, mu)
    assert torch.equal(plus, w + su) and torch.equal(minus, w - su)
    p = w.clone()
    LAWS[law].axpy(p, key, start, -mu)
    assert torch.equal(p, w + _ref(law, key, start, n).mul_(-mu))


@needs_kernel
@pytest.mark.parametrize("law", KERNEL_LAWS)
def test_kernel_rows_equal_the_reference(law):
    out = torch.empty(5, 37)
    starts = [0, 37 * 3, 37 * 1000 + 0, 37 * 7, 37 * 3]
    LAWS[law].fill_rows(out, 42, starts)
    with counter.reference_only():
        want = LAWS[law].fill_rows(torch.empty(5, 37), 42, starts)
    assert torch.equal(out, want)


@pytest.mark.parametrize("law", KERNEL_LAWS)
def test_the_law_has_the_right_moments_on_a_million_draws(law):
    """Mean 0, variance 1, fourth moment 3 (Gaussian) or 1 (Rademacher), within 6 standard errors."""
    u = LAWS[law].fill(torch.empty(1 << 20), 2024, 0).double()
    n = u.numel()
    m4 = 3.0 if law == "gaussian" else 1.0
    assert abs(u.mean()) < 6 / n ** 0.5
    assert abs(u.pow(2).mean() - 1) < 6 * (m4 - 1) ** 0.5 / n ** 0.5 + 1e-12
    assert abs(u.pow(4).mean() - m4) < 6 * (96.0 ** 0.5 if law == "gaussian" else 0.0) / n ** 0.5 + 1e-12


@needs_kernel
@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("law", ["gaussian", "rademacher"])
def test_a_chunked_folded_run_is_the_same_with_and_without_the_kernel(tied, law):
    """Paired probes through the chunked Linear path (fused pair), folded SGD updates (fused axpy),
    embedding rows: every loss and every weight bit-identical to the reference's run."""
    def run():
        prob, _ = _lm_problem(tied, torch.float32)
        opt = ho.HybridOptimizer(prob, ho.HybridConfig(lr_x=1e-2, mu=1e-2, seed=3, direction=law),
                                 cache_directions=False, context=SweepContext(chunk_elements=2000))
        tr = ho.train(opt, ho.RandomReshuffling(16, 4, seed=0), 5)
        opt.flush()
        return tr.losses, [p.detach().clone() for p in prob.zo_params]

    la, wa = run()
    with counter.reference_only():
        lb, wb = run()
    assert la == lb and all(torch.equal(a, b) for a, b in zip(wa, wb))


@needs_kernel
@pytest.mark.parametrize("method", ho.METHODS)
def test_every_method_is_the_same_with_and_without_the_kernel(method):
    def run():
        prob, base, adapter = lora_problem(method)
        cfg = ho.HybridConfig(lr_x=1e-2, lr_y=1e-2, mu=1e-2, weight_decay_x=0.1, seed=5)
        opt = ho.HybridOptimizer(prob, cfg, cache_directions=False)
        tr = ho.train(opt, ho.RandomReshuffling(prob.n, 6, seed=1), 4)
        opt.flush()
        return tr.losses, [p.detach().clone() for p in base + adapter]

    la, wa = run()
    with counter.reference_only():
        lb, wb = run()
    assert la == lb and all(torch.equal(a, b) for a, b in zip(wa, wb))


def test_without_a_compiler_the_reference_is_used_with_one_warning(tmp_path):
    """A machine with no C++ compiler: one RuntimeWarning, and the same directions."""
    code = ("import warnings, torch\n"
            "warnings.simplefilter('always')\n"
            "from hybridopt.directions import Directions\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    u = Directions('gaussian', 7, [torch.zeros(1001)]).u(0, 0)\n"
            "    Directions('rademacher', 7, [torch.zeros(99)]).u(0, 0)\n"
            "print(sum('torch reference' in str(x.message) for x in w))\n"
            "torch.save(u, %r)\n" % str(tmp_path / "u.pt"))
    env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"), HYBRIDOPT_KERNEL_DIR=str(tmp_path / "k"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "1"
    assert torch.equal(torch.load(tmp_path / "u.pt"), Directions("gaussian", 7, [torch.zeros(1001)]).u(0, 0))
