"""Mutation tests M1–M17 (spec §5 M1–M8, issue #15 M9–M14 and M17, RADEMACHER.md M15–M16): each perturbs exactly one
constant of the coefficient table (``theory.lemmas.mutated``, which rebuilds the lemmas and the theorem) and the named
check on a concrete instance (the same helper the property test uses) must report a violation; without the mutation
the very same call passes. This catches constants that are too small (or, for the step-size rule, too large); the
sharpness checks catch constants that are too large.

M14 and M17 are simulation-based: the certified run of the simulator on Family D (``test_simulator.py``) must fail
when the epoch count T_req(eps) of L6(B) is 100x too small (M14) or when the smoothing radius mu(eps) of the schedule
is 1000x too large (M17: the x-block, which carries ~100% of ||grad f(z0)||^2 there, then barely descends and the
running average stays above eps^2 on [T_req, 2 T_req]; at 100x it still holds, SIMULATOR.md "Falsification power").
"""
from __future__ import annotations

import numpy as np
import pytest

from test_extremal import (check_L1a_E1, check_L1b_E6_balanced, check_L1bc_E2_sharp, check_L1c_x_E6_pure_y,
                           check_L2a_E3, check_L3b_E4_tilted, check_L3bc_E4, check_L3bc_E5, check_L4a_E5, check_L4b_E5)
from test_lemmas_families import check_L1c_x_family_D
from test_rademacher import check_R2b_R3b_E4, check_R3b_E5
from test_theorem import check_schedule_on_family
from test_simulator import certified_mutation_checks
from hybridopt.theory import bound, lemmas


def _m1():   # drop e^{Lambda_1} in gbar: T2 L1(a) on E1, h1 = 2
    return [check_L1a_E1(y1=0.0, h1=2.0, s=1.0)[0]]


def _m2():   # 1/2 -> 1/4 in L1(b): T2 on E2 (top singular pair)
    return [check_L1bc_E2_sharp(1.0, 2.0, 1.5, 3, 2, 0.7, 0.4, seed=0)["L1b"][0]]


def _m3():   # ell mu^2 m/2 -> /4 in L2(a): T3 on E3
    return [check_L2a_E3(ell=1.3, m=4, mu=0.5, seed=0)[0]]


def _m4():   # 2(m+2) -> (m+2)/2 in L3(b): T4 on E5
    return [check_L3bc_E5(m=3, mu=0.1, seed=0)[0]["L3b"]]


def _m5():   # m(m+2)(m+4)/2 -> /8 in L3(b): T4 on E4, m = 1, x = 0
    return [check_L3bc_E4(ell=1.0, m=1, mu=1.0, seed=0)[0]["L3b"]]


def _m6():   # k^2 G^2 -> k G^2 in L4(b): T5 on E5, b = 0, d_x = 1, q = 8, n = k = 32
    checks, *_ = check_L4b_E5(np.array([1.0]), np.zeros(1), eta_x=0.01, mu=0.1, q=8, n=32, seed=0)
    return checks


def _m7():   # k eta_y G -> k eta_y G / 2 in L4(a): T5 on E5, a = 0
    return [check_L4a_E5(np.zeros(2), np.array([1.0, -2.0]), eta_y=0.1, n=5)[0]]


def _m8():   # drop 2 L_xy0 |h_x||h_y| from q0: T2 L1(b) on E2
    return [check_L1bc_E2_sharp(1.0, 2.0, -1.5, 3, 2, 0.7, 0.4, seed=1)["L1b"][0]]


def _m9():   # drop Lambda^x_1 gbar from L1(c)_x: T2 on E6 and on Family D with h = (0, h_y) (L_xy0 = 0 there)
    return [check_L1c_x_E6_pure_y()[0], check_L1c_x_family_D()[0]]


def _m10():  # drop 2 L_xy1 |h_x||h_y| from q1: T2 L1(b) on E6 along a balanced direction, h -> 0
    return [check_L1b_E6_balanced()[0]]


def _m11():  # kappa_0: 1/(6 n L_X) -> 1/(3 n L_X): eta(eps) on a Family D instance in the kappa_0 regime breaks (S)
    return check_schedule_on_family("kappa0")


def _m12():  # V(mu)'s 2 (d_x+2) G^2 -> (d_x+2) G^2 (L3(b)'s factor 2): T4 on the tilted E4, m = 1
    return [check_L3b_E4_tilted()[0]]


def _m13():  # kappa_2 -> 100 kappa_2: term (ii) 6 L_X eta V/q of L6(B) exceeds c eps^2/5 on a Family D instance
    return check_schedule_on_family("kappa2")


def _m14():  # T_req(eps) -> T_req/100: the simulator's certified window on Family D sees Abar_T > eps^2
    return certified_mutation_checks()


def _m15():  # Rademacher bias 1/2 ell mu m -> 1/4: R2(b) exact on E4 at m = 1 (equality)
    return [check_R2b_R3b_E4()["R2b"]]


def _m16():  # R3(b): m (...)^2 -> (m/2)(...)^2: exact on E5 (equality)
    return [check_R3b_E5()]


def _m17():  # mu(eps) -> 1000 mu(eps): the simulator's certified window on Family D sees Abar_T > eps^2
    return certified_mutation_checks()


CASES = {"M1": _m1, "M2": _m2, "M3": _m3, "M4": _m4, "M5": _m5, "M6": _m6, "M7": _m7, "M8": _m8, "M9": _m9,
         "M10": _m10, "M11": _m11, "M12": _m12, "M13": _m13, "M14": _m14, "M15": _m15, "M16": _m16,
         "M17": _m17}


def test_mutation_table_is_complete():
    assert set(CASES) == set(lemmas.MUTATIONS) == {f"M{i}" for i in range(1, 18)}


@pytest.mark.parametrize("mid", sorted(CASES))
def test_mutation_is_caught(mid):
    run = CASES[mid]
    clean = run()
    assert all(clean), [c for c in clean if not c]          # the unmutated statement passes the same check
    before = {n: getattr(lemmas, n).rhs for n in lemmas.NAMES}
    th_before = {k: v for k, v in bound.theorem_exprs("ii").items()}
    with lemmas.mutated(mid):
        changed = [n for n in lemmas.NAMES if getattr(lemmas, n).rhs != before[n]]
        changed += [k for k, v in bound.theorem_exprs("ii").items() if v != th_before[k]]
        changed += [k for k, v in bound.theorem_exprs("ii", law="rademacher").items() if v != th_before.get(k)]
        assert changed, f"{mid} changed no lemma and no theorem expression"
        mutated_checks = run()
    assert any(c.violated for c in mutated_checks), (mid, mutated_checks)
    # the context manager restores the statements
    assert all(getattr(lemmas, n).rhs == before[n] for n in lemmas.NAMES)
    assert all(v == th_before[k] for k, v in bound.theorem_exprs("ii").items())


def test_mutated_rejects_unknown_coefficient():
    with pytest.raises(KeyError):
        with lemmas.mutated(not_a_coefficient=1):
            pass
