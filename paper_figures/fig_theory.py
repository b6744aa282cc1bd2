"""Figures: theory — epochs-to-ε vs ε against the bound (the simulator's P1, one per family) and
fixed-step running averages against B(T) (P2).  Drawn by ``theory.sim_plots`` from
``DIR/simulation/simulation.json`` only (the same functions ``hybridopt simulate`` uses).
"""
from __future__ import annotations

import sys
from pathlib import Path

from . import style
from .results import load_simulation


def draw(out: str | Path) -> list[Path]:
    from hybridopt.theory import sim_plots

    out = Path(out)
    sim = load_simulation(out)
    if sim is None:
        return []
    _, data = sim
    style.apply()
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    return sim_plots.plot_p1(data, figs) + sim_plots.plot_p2(data, figs)


if __name__ == "__main__":  # pragma: no cover
    print("\n".join(map(str, draw(sys.argv[1]))))
