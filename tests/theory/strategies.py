"""Hypothesis strategies shared by the theory tests (spec §5)."""
from hypothesis import strategies as st

from hybridopt.theory.families import make_family

FAMS = ("A", "B", "C")


@st.composite
def instances(draw, families=FAMS, max_dx=60):
    """Spec §5: d_x ∈ [2,60], d_y ∈ [1,6], n ∈ [1,8], m ∈ [1,6]; C: p1,p2 ∈ [2,6], r ∈ [1,2].
    Returns (family, seed)."""
    name = draw(st.sampled_from(families))
    seed = draw(st.integers(0, 2**31 - 1))
    n, m = draw(st.integers(1, 8)), draw(st.integers(1, 6))
    if name == "C":
        return make_family("C", seed, n=n, m=m, p1=draw(st.integers(2, 6)), p2=draw(st.integers(2, 6)),
                           r=draw(st.integers(1, 2))), seed
    return make_family(name, seed, n=n, m=m, d_x=draw(st.integers(2, max_dx)), d_y=draw(st.integers(1, 6))), seed
