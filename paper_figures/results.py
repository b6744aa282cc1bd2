"""Reading result files (never producing them): fine-tuning runs and the simulation.

Layout of a reproduce folder ``DIR``::

    DIR/scale.json                      the scale preset used (copied by the driver)
    DIR/reproduce.json                  the driver's record: commands, wall times, machine
    DIR/simulation/simulation.json      the simulator's output (theory/sim_cli.py)
    DIR/runs/<group>/<method>/result.json   one fine-tuning run (benchmarks/runner.py)

``<group>`` is the task name (``sst2``), or ``task@model`` when a scale runs a task on several models.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hybridopt.methods import FO_REFERENCES, METHODS

SIM = Path("simulation") / "simulation.json"


def load_runs(out: str | Path) -> list[dict[str, Any]]:
    """Every ``runs/<group>/<method>/result.json`` under ``out`` with ``_file`` (relative path),
    ``_group`` and ``_method`` added; sorted by group, then the style's method order."""
    out = Path(out)
    rows = []
    for f in sorted((out / "runs").glob("*/*/result.json")):
        try:
            r = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        r["_file"] = f.relative_to(out).as_posix()
        r["_group"] = f.parent.parent.name
        r["_method"] = r.get("method", f.parent.name)
        rows.append(r)
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(rows, key=lambda r: (r["_group"], order.get(r["_method"], 99)))


def by_group(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{group: {method: run}}`` in a stable order (SST-2, WSC, WinoGrande first)."""
    pref = {"sst2": 0, "wsc": 1, "winogrande": 2}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in sorted(runs, key=lambda r: (pref.get(r["_group"].split("@")[0], 9), r["_group"])):
        out.setdefault(r["_group"], {})[r["_method"]] = r
    return out


def reference_method(methods: dict[str, Any]) -> str | None:
    """The run whose best dev accuracy defines the target: full FT if present, else the
    first-order PEFT run, else none."""
    for m in FO_REFERENCES:
        if m in methods:
            return m
    return None


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
