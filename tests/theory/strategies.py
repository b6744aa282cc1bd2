"""Hypothesis strategies shared by the theory tests (spec §5)."""
import torch
from hypothesis import strategies as st

from hybridopt.theory.families import DT, make_family

FAMS = ("A", "B", "C", "D")
#: the families whose invariant set 𝒴 is a box [−R, R]^{d_y} (B: Lemma 4.3, D: Lemma D)
BOXED = ("B", "D")


def box(F) -> float:
    """Half-width of the invariant box of a boxed family (R_B or R_D)."""
    return F.R_B if F.name == "B" else F.R_D


def domain_points(F, rng, R=16):
    """R points of the cylinder R^{d_x} × 𝒴 (spec §5): x ~ N(0, σ²), σ = 10^U[−2,1] per point; A: y ~ N(0, σ²);
    B, D: y uniform in the box; C: y in the ball (uniform radius fraction)."""
    sz = 10 ** rng.uniform(-2, 1, (R, 1))
    x = torch.tensor(rng.standard_normal((R, F.d_x)) * sz, dtype=DT)
    if F.name == "A":
        y = torch.tensor(rng.standard_normal((R, F.d_y)) * sz, dtype=DT)
    elif F.name in BOXED:
        y = torch.tensor(rng.uniform(-1, 1, (R, F.d_y)) * box(F), dtype=DT)
    else:
        y = torch.tensor(rng.standard_normal((R, F.d_y)), dtype=DT)
        y = y / y.norm(dim=-1, keepdim=True) * F.R_C * torch.tensor(rng.uniform(0, 1, (R, 1)), dtype=DT)
    return x, y


@st.composite
def instances(draw, families=FAMS, max_dx=60, max_n=8, max_dy=6, max_p=6):
    """Spec §5: d_x ∈ [2,60], d_y ∈ [1,6], n ∈ [1,8], m ∈ [1,6]; C: p1,p2 ∈ [2,6], r ∈ [1,2] (D as A/B); the
    upper ends can be lowered for time.  Returns (family, seed)."""
    name = draw(st.sampled_from(families))
    seed = draw(st.integers(0, 2**31 - 1))
    n, m = draw(st.integers(1, max_n)), draw(st.integers(1, 6))
    if name == "C":
        return make_family("C", seed, n=n, m=m, p1=draw(st.integers(2, max_p)), p2=draw(st.integers(2, max_p)),
                           r=draw(st.integers(1, 2))), seed
    return make_family(name, seed, n=n, m=m, d_x=draw(st.integers(2, max_dx)),
                       d_y=draw(st.integers(1, max_dy))), seed
