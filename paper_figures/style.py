"""One style for every figure: method → colour/marker/label, task labels, sizes, saving.

Every figure module imports this and nothing else for its look, so the five methods read
the same in every figure of the report.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hybridopt.io import save_with  # noqa: E402
from hybridopt.methods import METHODS, REGISTRY  # noqa: E402,F401  (the order of every legend and table)

#: method → long and short labels (from the method registry)
LABELS = {name: m.label for name, m in REGISTRY.items()}
SHORT = {name: m.short for name, m in REGISTRY.items()}
COLORS = {"fo-full": "#1f77b4", "fo-peft": "#17becf", "zo-full": "#ff7f0e", "zo-peft": "#bcbd22",
          "hybrid": "#d62728"}
MARKERS = {"fo-full": "s", "fo-peft": "D", "zo-full": "^", "zo-peft": "v", "hybrid": "o"}
LINESTYLES = {"fo-full": "-", "fo-peft": "-", "zo-full": "--", "zo-peft": "--", "hybrid": "-"}

TASK_LABELS = {"sst2": "SST-2", "wsc": "WSC", "winogrande": "WinoGrande"}

#: block colours of the stationarity figure (x: ZO base block, y: FO PEFT block)
BLOCK_COLORS = {"x": "#ff7f0e", "y": "#17becf", "bound": "#444444"}

PANEL = (5.0, 3.6)        # one panel, inches
DPI = 130
FONT = 9


def apply() -> None:
    """Set the shared rcParams (called by every figure module before drawing)."""
    plt.rcParams.update({
        "font.size": FONT, "axes.titlesize": FONT + 1, "axes.labelsize": FONT, "legend.fontsize": FONT - 1,
        "xtick.labelsize": FONT - 1, "ytick.labelsize": FONT - 1, "axes.grid": True, "grid.alpha": 0.25,
        "axes.spines.top": False, "axes.spines.right": False, "savefig.bbox": "tight",
    })


def method_kw(method: str, **kw) -> dict:
    """Line/marker keywords of a method (colour, marker, line style, label)."""
    out = dict(color=COLORS.get(method, "gray"), marker=MARKERS.get(method, "."),
               linestyle=LINESTYLES.get(method, "-"), label=LABELS.get(method, method))
    out.update(kw)
    return out


#: colours of the hybrid variants (increasing η_x: light to dark red)
VARIANT_SHADES = ("#f4a582", "#e0533f", "#b2182b", "#67001f", "#3d0010")


def cell_colors(cells) -> dict[str, str]:
    """variant → colour: a method's own colour, the hybrid variants shades of red by rank of η_x."""
    out = {c.variant: COLORS.get(c.method, "gray") for c in cells}
    hyb = sorted((c for c in cells if c.method == "hybrid" and c.variant != c.method),
                 key=lambda c: c.first.result.config["optimizer"].get("lr_x") or 0.0)
    for k, c in enumerate(hyb):
        out[c.variant] = VARIANT_SHADES[min(k, len(VARIANT_SHADES) - 1)]
    return out


def cell_kw(cell, colors: dict[str, str], **kw) -> dict:
    """Line/marker keywords of a results cell (a method, or a variant of one)."""
    out = method_kw(cell.method, label=cell.label, color=colors.get(cell.variant, COLORS.get(cell.method, "gray")))
    out.update(kw)
    return out


def coincident(drawn: list, x, y, rtol: float = 1e-6) -> str | None:
    """The label of a curve in ``drawn`` ((label, x, y) triples already on the axes) that (x, y) lies on, or None.

    Two methods can give the same curve (a ZO block whose step is too small to change a loss or a prediction):
    the later one is then drawn thinner on top of the first, and its legend entry says so, instead of vanishing."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    for label, x0, y0 in drawn:
        if x0.shape == x.shape and np.array_equal(x0, x) and np.allclose(y0, y, rtol=rtol, atol=1e-12, equal_nan=True):
            return label
    return None


#: a curve drawn on top of an identical one: this fraction of the line width and marker size
ON_TOP = 0.45


def line_kw(same: str | None, lw: float, ms: float | None = None) -> dict:
    """Width (and marker size) of a curve; one that lies on an earlier curve (``same`` from :func:`coincident`) is
    drawn above it, thinner, in short dashes, so that both colours show."""
    f = ON_TOP if same else 1.0
    out = dict(lw=lw * f, **({} if ms is None else {"ms": ms * f}))
    return dict(out, zorder=3, linestyle=(0, (2.5, 1.5))) if same else out


def task_label(task: str) -> str:
    """'sst2' → 'SST-2'; a run group 'sst2@opt-1.3b' → 'SST-2 (opt-1.3b)'."""
    base, _, model = task.partition("@")
    lab = TASK_LABELS.get(base, base)
    return f"{lab} ({model})" if model else lab


def subplots(nrows: int = 1, ncols: int = 1, scale: float = 1.0, **kw):
    apply()
    fig, axes = plt.subplots(nrows, ncols, figsize=(PANEL[0] * ncols * scale, PANEL[1] * nrows * scale),
                             squeeze=False, **kw)
    return fig, axes


def save(fig, out_dir: str | Path, stem: str) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically; close the figure; return the paths."""
    out_dir = Path(out_dir)
    files = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{stem}.{ext}"
        save_with(path, lambda fh, e=ext: fig.savefig(fh, format=e, dpi=DPI, bbox_inches="tight"))
        files.append(path)
    plt.close(fig)
    return files
