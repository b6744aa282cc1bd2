"""A small learning-rate grid with model selection on dev only.

Every combination is trained without looking at the test split; the trial with the best dev
metric (accuracy, or the SFT target loss; earliest in grid order on ties) is selected, and only its selected checkpoint is
evaluated on test, once.  Layout: ``OUT/trials/<name>/`` per trial, ``OUT/grid.json`` and
``OUT/result.json`` (the selected trial's result with its test accuracy and the grid).  A winner
whose best dev value is that of step 0 (no trial improved on the model before training) is
flagged (``grid.selected_step_0``) and warned about.  One process at a time works in ``OUT``.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from hybridopt.io import LockedError, RunLock, write_json

from .config import ConfigError, FinetuneConfig, check_consistency, validate
from . import runner

GRID_KEYS = ("lr_x", "lr_y", "mu", "q")


def parse_grid(specs: Sequence[str]) -> dict[str, list[float]]:
    """``["lr_x=1e-6,1e-5", "lr_y=1e-3"]`` -> {'lr_x': [1e-6, 1e-5], 'lr_y': [1e-3]}."""
    grid: dict[str, list[float]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or key not in GRID_KEYS:
            raise ConfigError(f"--grid {spec!r}: expected KEY=v1,v2,... with KEY one of {', '.join(GRID_KEYS)}")
        try:
            vals = [int(v) if key == "q" else float(v) for v in values.split(",") if v]
        except ValueError:
            raise ConfigError(f"--grid {spec!r}: values must be numbers") from None
        if not vals:
            raise ConfigError(f"--grid {spec!r}: no values")
        grid[key] = vals
    if not grid:
        raise ConfigError("no --grid given")
    return grid


def trial_configs(base: FinetuneConfig, grid: dict[str, list[float]]) -> list[tuple[str, dict, FinetuneConfig]]:
    check_consistency(base, grid, {})
    keys = list(grid)
    out = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, combo))
        name = "_".join(f"{k}={v:g}" for k, v in params.items())
        cfg = validate(replace(base, optimizer={**base.optimizer, **params}))
        out.append((name, params, cfg))
    return out


def run_grid(base: FinetuneConfig, grid: dict[str, list[float]], out: str | Path, progress: bool = True,
             overwrite: bool = False, policy: runner.Policy | None = None) -> dict[str, Any]:
    out = Path(out)
    trials = trial_configs(base, grid)
    runner.check_out_dir(out, resume=False, overwrite=True)   # writable, not below a file
    try:
        lock = RunLock(out).acquire()
    except LockedError as e:
        raise ConfigError(str(e)) from None
    try:
        return _run_trials(base, grid, trials, out, progress, overwrite, policy)
    finally:
        lock.release()


def _run_trials(base, grid, trials, out: Path, progress: bool, overwrite: bool, policy) -> dict[str, Any]:
    rows = []
    for name, params, cfg in trials:
        tdir = out / "trials" / name
        if (tdir / runner.RESULT).exists() and not overwrite:
            res = json.loads((tdir / runner.RESULT).read_text())
        else:
            res = runner.run(cfg, tdir, resume=runner.has_checkpoint(tdir) and not overwrite,
                             overwrite=overwrite, progress=progress, test=False, policy=policy)
        rows.append({"name": name, "params": params, "dev_best": res["dev_metric"]["best"],
                     "dev_step": res["dev_metric"]["step"], "path": str(tdir), "result": res})
    sign = 1 if rows[0]["result"]["dev_metric"]["higher_is_better"] else -1
    best = max(range(len(rows)), key=lambda i: (sign * rows[i]["dev_best"], -i))
    chosen = rows[best]
    metric = chosen["result"]["metric"]
    test_acc = runner.evaluate_selected(trials[best][2], chosen["path"])
    step_0 = chosen["dev_step"] == 0
    warnings = [f"the selected trial {chosen['name']} is best at step 0, the model before training: no trial "
                f"improved the dev {metric} (the test {metric} is the untrained model's); try other learning "
                "rates or more steps"] if step_0 else []
    result = {**chosen["result"], "test_metric": test_acc,
              **({"test_accuracy": test_acc} if metric == "accuracy" else {}),
              "grid": {"values": grid, "selected": chosen["name"], "selection": f"best dev {metric}",
                       "selected_step_0": step_0, "warnings": warnings,
                       "trials": [{k: r[k] for k in ("name", "params", "dev_best", "dev_step")} for r in rows]}}
    write_json(out / "grid.json", result["grid"] | {"test_accuracy_of_selected": test_acc})
    write_json(out / runner.RESULT, result)
    return result
