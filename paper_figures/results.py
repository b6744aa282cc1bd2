"""Reading result files (never producing them): fine-tuning runs and the simulation.

Layout of a reproduce folder ``DIR``::

    DIR/scale.json                                  the scale preset used (copied by the driver)
    DIR/reproduce.json                              the driver's record: commands, wall times, load, machine
    DIR/simulation/simulation.json                  the simulator's output (theory/sim_cli.py)
    DIR/runs/<group>/<variant>/seed<k>/result.json  one fine-tuning run (benchmarks/runner.py)

``<group>`` is the task name (``sst2``), or ``task@model`` when a scale runs a task on several
models; ``<variant>`` is a method name, or a preset's name for a method with its own settings
(``hybrid-lrx1e-5``); ``seed<k>`` the run's seed.  Folders of the first layout,
``runs/<group>/<method>/result.json`` (one seed), are read too.  Each ``result.json`` is read
through :class:`benchmarks.schema.RunResult`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridopt.benchmarks.schema import RunResult, SchemaError, load
from hybridopt.methods import FO_REFERENCES, METHODS, REGISTRY

SIM = Path("simulation") / "simulation.json"
GROUP_ORDER = {"sst2": 0, "wsc": 1, "winogrande": 2}


@dataclass
class Run:
    """One run's result file: where it is (relative to DIR), its cell and seed, its content."""

    file: str
    group: str
    variant: str
    seed: int
    result: RunResult

    @property
    def method(self) -> str:
        return self.result.method


@dataclass
class Cell:
    """The runs of one (group, variant) over seeds, in seed order."""

    group: str
    variant: str
    method: str
    label: str
    short: str
    runs: list[Run] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        return [r.file for r in self.runs]

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    @property
    def first(self) -> Run:
        return self.runs[0]

    def files_for(self, seeds: list[int]) -> list[str]:
        by = {r.seed: r.file for r in self.runs}
        return [by[s] for s in seeds]


def load_runs(out: str | Path) -> list[Run]:
    """Every result file under ``DIR/runs`` (both layouts), sorted by group, variant, seed.
    Unreadable files are skipped (a run being written); a file that breaks the schema raises."""
    out = Path(out)
    rows = []
    for f in sorted((out / "runs").glob("*/*/result.json")) + sorted((out / "runs").glob("*/*/seed*/result.json")):
        try:
            json.loads(f.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        r = load(f)
        legacy = f.parent.parent.parent.name == "runs"
        variant_dir = f.parent if legacy else f.parent.parent
        seed = r.seeds.seed if legacy else int(f.parent.name[len("seed"):])
        rows.append(Run(f.relative_to(out).as_posix(), variant_dir.parent.name, variant_dir.name, seed, r))
    return sorted(rows, key=lambda r: (_group_key(r.group), r.variant, r.seed))


def _group_key(g: str) -> tuple:
    return (GROUP_ORDER.get(g.split("@")[0], 9), g)


def variant_labels(scale: dict[str, Any] | None) -> dict[str, tuple[str, str]]:
    """variant name → (label, short label), from the preset's method entries."""
    out = {}
    for g in (scale or {}).get("groups", []):
        for m in g.get("methods", []):
            if isinstance(m, dict):
                # an entry named as its method, without labels of its own, keeps the method's labels
                reg = REGISTRY.get(m["name"]) if m["name"] == m.get("method") and "label" not in m else None
                label = m.get("label", reg.label if reg else m["name"])
                out[m["name"]] = (label, m.get("short", reg.short if reg else label))
    return out


def cells(out: str | Path, runs: list[Run] | None = None) -> dict[str, dict[str, Cell]]:
    """``{group: {variant: Cell}}``: groups in a stable order (SST-2, WSC, WinoGrande first),
    variants in the registry's method order, then by name."""
    out = Path(out)
    runs = load_runs(out) if runs is None else runs
    labels = variant_labels(load_json(out / "scale.json"))
    table: dict[str, dict[str, Cell]] = {}
    for r in runs:
        g = table.setdefault(r.group, {})
        if r.variant not in g:
            m = REGISTRY.get(r.method)
            lab, short = labels.get(r.variant, (m.label, m.short) if m and r.variant == r.method else
                                    (r.variant, r.variant))
            g[r.variant] = Cell(r.group, r.variant, r.method, lab, short)
        g[r.variant].runs.append(r)
    order = {m: i for i, m in enumerate(METHODS)}
    return {grp: dict(sorted(vs.items(), key=lambda kv: (order.get(kv[1].method, 99), kv[0] != kv[1].method, kv[0])))
            for grp, vs in sorted(table.items(), key=lambda kv: _group_key(kv[0]))}


def reference(variants: dict[str, Cell]) -> Cell | None:
    """The cell whose best dev metric defines the target: full FT if present, else first-order
    PEFT (plain variants, named as the method), else none."""
    for m in FO_REFERENCES:
        if m in variants:
            return variants[m]
    return None


def baseline(variants: dict[str, Cell]) -> Cell | None:
    """The PEFT run the hybrid is paired with (same adapter, batches and seeds: only the ZO
    updates differ)."""
    return variants.get("fo-peft")


def hybrids(variants: dict[str, Cell]) -> list[Cell]:
    return [c for c in variants.values() if c.method == "hybrid"]


def common_seeds(*cs: Cell) -> list[int]:
    """Seeds present in every cell (the pairs of a paired comparison), in order."""
    seeds = set(cs[0].seeds)
    for c in cs[1:]:
        seeds &= set(c.seeds)
    return sorted(seeds)


def load_simulation(out: str | Path) -> tuple[Path, dict[str, Any]] | None:
    p = Path(out) / SIM
    if not p.is_file():
        return None
    try:
        return p, json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def load_json(path: str | Path) -> dict[str, Any] | None:
    p = Path(path)
    if not p.is_file():
        return None
    return json.loads(p.read_text(encoding="utf-8"))


__all__ = ["Run", "Cell", "load_runs", "cells", "reference", "baseline", "hybrids", "common_seeds",
           "load_simulation", "load_json", "variant_labels", "SIM", "SchemaError"]
