"""Which mistakes in the step-size rule a simulation can see: ``python -m hybridopt.theory.probes``.

Each probe perturbs one constant of the schedule of L6(B)/R6(B) (``theory.lemmas.mutated``), runs the simulator on
Family D with and without it, and prints what the measurement says.  The theorem's bound is loose (T_req is
~20–60× the measured epochs-to-ε, SIMULATOR.md), so only mistakes larger than that looseness can show up; this
command measures which do (2026-12-02, SIMULATOR.md "Falsification power"): μ(ε) × 100 and κ₂ × 100 (M13) still hold
(window ratios 0.76 and 0.05), (S)'s η_y cap × 100 is invisible on D; T_req / 100 (M14) and μ(ε) × 1000 (M17) fail,
and those two are the simulation-based mutation tests (``tests/theory/test_mutations.py``, ``test_simulator.py``).
"""
from __future__ import annotations

import sys
import time

import sympy as sp

from hybridopt.theory import lemmas, simulator as S

#: the sweeps' certified Family D instance (SIMULATOR.md), and a two-ridge variant (its smoothing bias is not 0)
D_CERT = dict(n=1, d_x=1, d_y=1, m=1, sigma_x=2.0, theta=0.02, beta=0.3, a_scale=0.5, delta=0.25, start_scale=0.5)
D_ZO = dict(n=4, d_x=16, d_y=2, m=4)


def _certified(dims: dict, law: str, frac: float, mutation: dict) -> dict:
    inst = S._inst("D", dims, data_seed=4, start_seed=3, q=8, law=law, replicates=16)
    c = S.build(S.Instance(**inst))[3]
    with lemmas.mutated(**mutation):
        r = S.run_task(dict(kind="p1", mode="certified", instance=inst, eps=frac * c["grad0"], s=1.0, cap=None))
    w = r["window"]
    return dict(T_req=r["epochs_bound"], T_hat=r["epochs_mean_curve"], mu=r["mu"], eta=r["eta_x"],
                window_ratio=w["ratio"], holds=r["holds"], monitor=r["monitor"]["ok"])


def _fixed(mutation: dict) -> dict:
    inst = S._inst("D", D_ZO, replicates=8)
    with lemmas.mutated(**mutation):
        r = S.run_task(dict(kind="p2", instance=inst, factor=1.0, mu=1e-3, T=40, label="caps of (S)"))
    return dict(eta_x=r["eta_x"], eta_y=r["eta_y"], max_A_over_B=r["max_ratio"], monitor=r["monitor_ok"])


#: (label, what is measured, runner, mutation)
PROBES = [
    ("M14: T_req -> T_req/100", "certified D, Rademacher, eps = 0.95 ||grad f(z0)||",
     lambda m: _certified(D_CERT, "rademacher", 0.95, m), {"T_req_factor": sp.Rational(1, 5)}),
    ("M13: kappa_2 -> 100 kappa_2", "certified D, Rademacher, eps = 0.9 ||grad f(z0)||",
     lambda m: _certified(D_CERT, "rademacher", 0.9, m), {"kappa2_scale": 100}),
    ("mu(eps) -> 100 mu(eps)", "certified D with m = 2 ridges, Rademacher, eps = 0.9 ||grad f(z0)||",
     lambda m: _certified(dict(D_CERT, m=2), "rademacher", 0.9, m), {"mu_scale": 100}),
    ("(S): eta_y cap x 100", "fixed steps at the caps of (S), D(n=4, d_x=16), 40 epochs",
     _fixed, {"S_y": sp.Rational(4, 100)}),
]


def main(argv: list[str] | None = None) -> int:
    for label, what, run, mutation in PROBES:
        t0 = time.process_time()
        clean, bad = run({}), run(mutation)
        print(f"{label}  [{what}]\n  clean:   {clean}\n  mutated: {bad}\n  ({time.process_time() - t0:.0f} s CPU)",
              flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
