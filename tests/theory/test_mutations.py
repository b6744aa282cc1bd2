"""Mutation tests M1–M8 (spec §5): each perturbs exactly one constant of a lemma (``theory.lemmas.mutated``) and
the named check (the same helper the property test uses) must report a violation; without the mutation the very
same call passes. This catches constants that are too small; the sharpness checks of ``test_extremal.py`` catch
constants that are too large.
"""
from __future__ import annotations

import numpy as np
import pytest

from test_extremal import (check_L1a_E1, check_L1bc_E2_sharp, check_L2a_E3, check_L3bc_E4, check_L3bc_E5,
                           check_L4a_E5, check_L4b_E5)
from hybridopt.theory import lemmas


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


CASES = {"M1": _m1, "M2": _m2, "M3": _m3, "M4": _m4, "M5": _m5, "M6": _m6, "M7": _m7, "M8": _m8}


def test_mutation_table_is_complete():
    assert set(CASES) == set(lemmas.MUTATIONS) == {f"M{i}" for i in range(1, 9)}


@pytest.mark.parametrize("mid", sorted(CASES))
def test_mutation_is_caught(mid):
    run = CASES[mid]
    clean = run()
    assert all(clean), [c for c in clean if not c]          # the unmutated statement passes the same check
    before = {n: getattr(lemmas, n).rhs for n in lemmas.NAMES}
    with lemmas.mutated(mid):
        changed = [n for n in lemmas.NAMES if getattr(lemmas, n).rhs != before[n]]
        assert changed, f"{mid} changed no lemma"
        mutated_checks = run()
    assert any(c.violated for c in mutated_checks), (mid, mutated_checks)
    # the context manager restores the statements
    assert all(getattr(lemmas, n).rhs == before[n] for n in lemmas.NAMES)


def test_mutated_rejects_unknown_coefficient():
    with pytest.raises(KeyError):
        with lemmas.mutated(not_a_coefficient=1):
            pass
