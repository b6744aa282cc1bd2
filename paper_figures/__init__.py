"""Every figure and table of the report, drawn from result files only (``README.md`` here).

:func:`draw_all` draws every figure of a reproduce folder; :mod:`.report` writes ``REPORT.md``.
None of these modules trains or simulates: the runs come from :mod:`hybridopt.benchmarks.pipeline`.
"""
from __future__ import annotations

from pathlib import Path

#: the figure modules, in the report's order; each has ``draw(DIR) -> [paths]``
FIGURES = ("fig_theory", "fig_curves", "fig_paired", "fig_contrib", "fig_steps", "fig_bound", "fig_cost")


def draw_all(out: str | Path) -> list[Path]:
    """Draw every figure of ``out`` (``out/figures``); return the files written."""
    import importlib

    files: list[Path] = []
    for name in FIGURES:
        files += importlib.import_module(f"{__name__}.{name}").draw(Path(out))
    return files
