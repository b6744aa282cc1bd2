"""``hybridopt reproduce``: run whatever results are missing, then draw every figure and table.

    hybridopt reproduce [--scale quick|default|study|paper|...] [--out DIR] [--dry-run] [--figures-only]
                        [--device cpu|cuda] [--no-progress]
    hybridopt reproduce --scale S --calibrate [--out DIR]   # measure the preset's "estimate" block here

1. reads the scale preset ``benchmarks/configs/scales/<scale>.json`` and copies it to
   ``DIR/scale.json`` (a folder holds one scale: a different preset there is refused);
2. runs what is missing — the simulator (``DIR/simulation/simulation.json``, through
   ``hybridopt simulate``) and each fine-tuning run (``DIR/runs/<group>/<variant>/seed<k>/result.json``,
   as ``hybridopt finetune --config ...``; an unfinished run with a ``checkpoint.pt`` is resumed) —
   and reuses everything that exists, so an interrupted or killed reproduce continues where it
   stopped when the same command is run again;
3. draws every figure (``DIR/figures``) and table (``DIR/tables``) from the result files only
   (:mod:`paper_figures`), writes ``DIR/REPORT.md`` and checks that every number in it is traced
   to a file.

A preset's ``groups`` list tasks; each names its ``methods`` — a method name, or a *variant*
``{"name": ..., "method": ..., "label": ..., <config overrides>}`` (a hybrid with its own ``lr_x``,
say) — and ``seeds`` (top level, per group, or per variant) runs every (group, variant) once per seed.  Runs go
seed by seed, so an unfinished study already holds complete tables for its first seeds.

Progress: one overall bar (ETA from the preset's ``estimate`` block) plus each run's own bar.
Exit code 0 when everything ran and the report verified, 1 when a run failed (the report is
still drawn from what exists), 2 on bad input, 130 on Ctrl-C (the running fine-tuning run saves a
checkpoint; rerun the same command to resume).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hybridopt.io import write_json

from .config import CONFIG_DIR

SCALES_DIR = CONFIG_DIR / "scales"
#: the shipped presets: every ``benchmarks/configs/scales/*.json`` (a new preset is one file), the four of the
#: README first
SCALES = tuple(sorted((p.stem for p in SCALES_DIR.glob("*.json")),
                      key=lambda s: ((("quick", "default", "study", "paper") + (s,)).index(s), s)))
#: keys of a group that are not run overrides
GROUP_KEYS = ("task", "methods", "steps", "method_overrides", "seeds")
#: keys of a variant entry that are not run overrides
VARIANT_KEYS = ("name", "method", "label", "short", "seeds")
SIMULATOR_KEYS = ("quick", "certified", "families", "workers")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def load_scale(name_or_path: str) -> dict[str, Any]:
    p = Path(name_or_path)
    if not p.suffix:
        p = SCALES_DIR / f"{name_or_path}.json"
    if not p.is_file():
        shown = f"benchmarks/configs/scales/{p.name}" if p.parent == SCALES_DIR else str(p)
        raise ValueError(f"unknown scale {name_or_path!r}: no preset {shown} (valid: {', '.join(SCALES)})")
    scale = json.loads(p.read_text(encoding="utf-8"))
    sim = scale.get("simulator")
    if sim is not None and (bad := sorted(set(sim) - set(SIMULATOR_KEYS))):
        raise ValueError(f"preset {p.name}: simulator option(s) {', '.join(bad)} are not options of "
                         f"`hybridopt simulate` (valid: {', '.join(SIMULATOR_KEYS)})")
    return scale


@dataclass
class Job:
    """One fine-tuning run of a preset: its cell (group, variant), seed and configuration overrides."""

    group: str
    task: str
    variant: str
    method: str
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.group}/{self.variant}/seed{self.seed}"

    def run_dir(self, out: Path) -> Path:
        return Path(out) / "runs" / self.group / self.variant / f"seed{self.seed}"


def group_name(g: dict[str, Any], scale: dict[str, Any]) -> str:
    models = {x.get("model", scale["common"].get("model")) for x in scale["groups"]}
    tasks = [x["task"] for x in scale["groups"]]
    if len(models) > 1 and tasks.count(g["task"]) > 1:
        return f"{g['task']}@{g.get('model', scale['common'].get('model'))}"
    return g["task"]


def _merge(over: dict[str, Any], extra: dict[str, Any]) -> None:
    for k, v in extra.items():
        over[k] = {**over.get(k, {}), **v} if isinstance(v, dict) else v


def plan_runs(scale: dict[str, Any], device: str | None = None) -> list[Job]:
    """Every run of the preset, seed by seed (then group, then variant, in the preset's order)."""
    jobs = []
    for g in scale["groups"]:
        group_seeds = g.get("seeds", scale.get("seeds", [scale["common"].get("seed", 0)]))
        for entry in g["methods"]:
            v = {"name": entry, "method": entry} if isinstance(entry, str) else entry
            m = v["method"]
            for seed in v.get("seeds", group_seeds):   # a variant may run on fewer seeds (a stability probe)
                over = dict(scale["common"])
                over.update({k: val for k, val in g.items() if k not in GROUP_KEYS})
                steps = g["steps"]
                over["steps"] = steps.get(m, steps.get("default")) if isinstance(steps, dict) else steps
                _merge(over, scale.get("method_overrides", {}).get(m, {}))
                _merge(over, g.get("method_overrides", {}).get(m, {}))
                _merge(over, {k: val for k, val in v.items() if k not in VARIANT_KEYS})
                over["seed"] = seed
                if device:
                    over["device"] = device
                jobs.append(Job(group_name(g, scale), g["task"], v["name"], m, seed, over))
    order = {s: i for i, s in enumerate(dict.fromkeys(j.seed for j in jobs))}
    return sorted(jobs, key=lambda j: order[j.seed])   # stable: the preset's order within a seed


def estimate_seconds(job: Job, scale: dict[str, Any]) -> float:
    """Estimated wall seconds of one run from the preset's ``estimate`` block (steps × seconds per
    step + evaluated examples × seconds per example + a fixed per-run overhead)."""
    est = scale.get("estimate", {})
    sps = est.get("seconds_per_step", {})
    o = job.overrides
    per = sps.get(f"{o.get('model')}/{job.method}",
                  sps.get(f"{job.task}/{job.variant}", sps.get(f"{job.task}/{job.method}",
                                                               sps.get(job.method, sps.get("default", 1.0)))))
    sizes = est.get("split_sizes", {}).get(job.task, {})
    n_dev = min(o.get("n_dev") or sizes.get("dev", 500), sizes.get("dev", 10**9))
    n_test = min(o.get("n_test") or sizes.get("test", 500), sizes.get("test", 10**9))
    n_eval = (o["steps"] // o.get("eval_every", 10) + 1) * n_dev + n_test
    spe = est.get("seconds_per_eval_example", 0.05)
    spe = spe.get(job.task, spe.get("default", 0.05)) if isinstance(spe, dict) else spe
    return o["steps"] * per + n_eval * spe + est.get("seconds_per_run_overhead", 5)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 3 * 3600 else f"{seconds / 3600:.0f} h"


def _rel(p: Path, root: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return p.as_posix()


def _load_record(out: Path) -> dict[str, Any]:
    p = out / "reproduce.json"
    if p.is_file():
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            pass
    return {"schema": "hybridopt.reproduce/2", "jobs": {}, "sessions": []}


def _loadavg() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _machine() -> dict[str, Any]:
    import torch

    info = {"platform": platform.platform(), "processor": platform.machine(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    try:
        import psutil  # optional

        info["memory_bytes"] = psutil.virtual_memory().total
    except ImportError:
        try:
            info["memory_bytes"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            pass
    return info


def _git() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
                           timeout=10)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# ---- stages -------------------------------------------------------------------------------------

def _model_ready(jobs: list[Job]) -> bool:
    if all(j.overrides.get("model") != "smollm2-135m" for j in jobs):
        return True
    from hybridopt.llm import models as M

    return M._smollm2_cached()


def prepare_model(model: str, record: dict, progress: bool) -> None:
    """Build the converted model cache once (smollm2-135m), timed, so run times exclude it."""
    if model != "smollm2-135m":
        return
    from hybridopt.llm import models as M

    if M._smollm2_cached():
        return
    t0 = time.time()
    if progress:
        print("reproduce: converting smollm2-135m (once, ~1 min) ...", file=sys.stderr, flush=True)
    M.convert_smollm2()
    record["jobs"]["model:smollm2-135m"] = {"wall_s": time.time() - t0, "status": "done",
                                            "command": "hybridopt.llm.models.convert_smollm2()"}


def simulate_argv(sim: dict[str, Any], out_dir: str, progress: bool) -> list[str]:
    """The ``hybridopt simulate`` options of a preset's ``simulator`` block."""
    argv = ["--out", out_dir]
    if sim.get("quick"):
        argv.append("--quick")
    if sim.get("certified"):
        argv.append("--certified")
    for f in sim.get("families") or []:
        argv += ["--family", f]
    if sim.get("workers"):
        argv += ["--workers", str(sim["workers"])]
    if not progress:
        argv.append("--no-progress")
    return argv


def run_simulator(out: Path, scale: dict, record: dict, progress: bool) -> bool:
    """``hybridopt simulate`` with the preset's options (its command-line entry point, nothing else)."""
    import torch

    from hybridopt.theory import sim_cli

    argv = simulate_argv(scale["simulator"], str(out / "simulation"), progress)
    threads = torch.get_num_threads()   # the simulator sets one thread in this process; restore it after
    t0, load0 = time.time(), _loadavg()
    rc = sim_cli.main(argv)
    torch.set_num_threads(threads)
    shown = ["DIR/simulation" if a == str(out / "simulation") else a for a in argv if a != "--no-progress"]
    record["jobs"]["simulation"] = {"wall_s": time.time() - t0, "status": "done" if rc == 0 else f"failed rc={rc}",
                                    "command": "hybridopt simulate " + " ".join(map(shlex.quote, shown)),
                                    "loadavg_start": load0, "loadavg_end": _loadavg()}
    return rc == 0


def run_one(job: Job, out: Path, scale: dict, progress: bool) -> tuple[int, str]:
    """One fine-tuning run; in a subprocess (own peak memory) unless the preset says otherwise."""
    from .config import build_config
    from .runner import CHECKPOINT, RunError, run

    run_dir = job.run_dir(out)
    cfg = build_config(job.task, job.method, None, job.overrides)
    # the run's merged configuration as a config file for ``hybridopt finetune --config`` (without the
    # peft block for the methods that have none: the CLI refuses options that do not apply)
    write_json(run_dir / "config.json", {k: v for k, v in cfg.to_dict().items()
                                         if not (k == "peft" and not cfg.uses_peft)})
    resume = (run_dir / CHECKPOINT).exists()
    cmd = ["hybridopt", "finetune", "--config", "DIR/" + _rel(run_dir / "config.json", out),
           "--out", "DIR/" + _rel(run_dir, out)] + (["--resume"] if resume else [])
    if not scale.get("isolate_runs", True):
        try:
            run(cfg, run_dir, resume=resume, overwrite=resume, progress=progress)
            return 0, " ".join(cmd)
        except RunError as e:
            print(f"reproduce: {job.name}: {e}", file=sys.stderr)
            return e.exit_code, " ".join(cmd)
    argv = [sys.executable, "-m", "hybridopt", "finetune", "--config", str(run_dir / "config.json"),
            "--out", str(run_dir)] + (["--resume"] if resume else [])
    if not progress:
        argv.append("--no-progress")
    child = subprocess.Popen(argv)
    try:
        return child.wait(), " ".join(cmd)
    except KeyboardInterrupt:
        # Ctrl-C reached the child too: let it save its checkpoint after the current step and exit
        child.wait()
        raise


def _check_folder(out: Path, scale: dict[str, Any]) -> str | None:
    existing = out / "scale.json"
    if not existing.is_file():
        return None
    old = json.loads(existing.read_text(encoding="utf-8"))
    return None if continues(old, scale) else (f"{out} holds results of another preset ({old.get('name')!r}, or an "
                                               f"edited one); use another --out")


def continues(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether preset ``new`` may continue a folder made by ``old``: the same preset up to wording and
    estimates (which change no result), or the same with groups (tasks) appended after the old ones
    (every run present stays a run of the new plan, and the new groups' runs are added)."""
    skip = ("estimate", "description", "groups")
    rest = {k: v for k, v in old.items() if k not in skip} == {k: v for k, v in new.items() if k not in skip}
    old_groups, new_groups = old.get("groups", []), new.get("groups", [])
    return rest and new_groups[:len(old_groups)] == old_groups


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="hybridopt reproduce", description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("--scale", default="default", help=f"{', '.join(SCALES)} (or a preset JSON file)")
    p.add_argument("--out", help="output folder (default: ./reproduce-<scale>)")
    p.add_argument("--device", help="override the preset's device (cpu, cuda, cuda:N)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the time estimate; run nothing")
    p.add_argument("--figures-only", action="store_true", help="run nothing; redraw figures and report")
    p.add_argument("--calibrate", action="store_true",
                   help="measure this machine's step and evaluation times with one short probe per (task, method) "
                        "of the preset (into --out, default ./calibrate-<scale>) and print the preset's estimate "
                        "block")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    t_start = time.time()
    try:
        scale = load_scale(a.scale)
    except (ValueError, json.JSONDecodeError) as e:
        print(f"hybridopt reproduce: error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out or f"{'calibrate' if a.calibrate else 'reproduce'}-{scale['name']}")
    if not a.calibrate and (problem := _check_folder(out, scale)):
        print(f"hybridopt reproduce: error: {problem}", file=sys.stderr)
        return 2
    jobs = plan_runs(scale, a.device)
    from .config import ConfigError, build_config

    try:
        for j in jobs:
            build_config(j.task, j.method, None, j.overrides)
    except ConfigError as e:
        if not a.dry_run:
            print(f"hybridopt reproduce: error: preset {scale['name']!r}: {e}", file=sys.stderr)
            return 2
        # the plan of a GPU preset can be read on any machine; its runs would fail here
        print(f"hybridopt reproduce: warning: preset {scale['name']!r} cannot run on this machine: {e}",
              file=sys.stderr)
    if a.calibrate:
        from .calibrate import main as calibrate

        return calibrate(scale, out, not a.no_progress)
    missing = [j for j in jobs if not (j.run_dir(out) / "result.json").is_file()]
    sim_wanted = scale.get("simulator") is not None
    sim_missing = sim_wanted and not (out / "simulation" / "simulation.json").is_file()
    est_block = scale.get("estimate", {})
    est = sum(estimate_seconds(j, scale) for j in missing) + (
        est_block.get("seconds_model_preparation", 0) if missing and not _model_ready(missing) else 0) + (
        est_block.get("seconds_simulator", 60) if sim_missing else 0)
    print(f"reproduce: scale {scale['name']!r} -> {out}/  ({len(jobs) - len(missing)} of {len(jobs)} runs"
          + (f" and {'no' if sim_missing else 'the'} simulation" if sim_wanted else "")
          + f" present; to run: {len(missing)} runs{' + simulator' if sim_missing else ''}, estimated "
            f"{_duration(est)})", file=sys.stderr)
    if a.dry_run:
        for j in missing:
            print(f"  {j.name}: {j.overrides['steps']} steps, ~{estimate_seconds(j, scale):.0f} s")
        if sim_missing:
            print(f"  simulation: hybridopt simulate {' '.join(simulate_argv(scale['simulator'], 'DIR/simulation', True))}"
                  f", ~{est_block.get('seconds_simulator', 60):.0f} s")
        return 0
    write_json(out / "scale.json", scale)
    record = _load_record(out)
    session: dict[str, Any] = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "scale": scale["name"], "argv": list(argv or sys.argv[1:]), "ran": [], "failed": [],
                               "reused": [j.name for j in jobs if j not in missing], "loadavg_start": _loadavg()}
    record.update(git_commit=_git(), machine=_machine())
    progress = not a.no_progress
    rc = 0
    try:
        if not a.figures_only:
            if sim_missing:
                ok = run_simulator(out, scale, record, progress)
                session["ran" if ok else "failed"].append("simulation")
                rc = rc if ok else 1
                write_json(out / "reproduce.json", record)
            if missing:
                rc = _run_jobs(missing, out, scale, record, session, est, progress) or rc
        t_draw = time.time()
        from hybridopt.paper_figures import draw_all, report

        files = draw_all(out)
        session["draw_s"] = time.time() - t_draw
        session["wall_s"] = time.time() - t_start
        session["loadavg_end"] = _loadavg()
        record["sessions"].append(session)
        record["totals"] = {"jobs_wall_s": sum(v["wall_s"] for v in record["jobs"].values())}
        write_json(out / "reproduce.json", record)
        rep, problems = report.write(out, files)
    except KeyboardInterrupt:
        session.update(interrupted=True, wall_s=time.time() - t_start, loadavg_end=_loadavg())
        record["sessions"].append(session)
        write_json(out / "reproduce.json", record)
        print(f"\nreproduce: interrupted; rerun `hybridopt reproduce --scale {scale['name']} --out {out}` to resume",
              file=sys.stderr)
        return 130
    print(report.summary(out))
    if problems:
        print("reproduce: REPORT.md provenance check FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        rc = rc or 1
    print(f"reproduce: {len(files)} figure files in {out / 'figures'}; report: {rep.resolve()}  "
          f"(this session {time.time() - t_start:.0f} s)")
    return rc


def _run_jobs(missing: list[Job], out: Path, scale: dict, record: dict, session: dict, est: float,
              progress: bool) -> int:
    """Run the missing fine-tuning runs in order, recording each one's wall time and load average."""
    from tqdm.auto import tqdm

    for m in {j.overrides.get("model") for j in missing}:
        prepare_model(m, record, progress)
    rc = 0
    bar = tqdm(total=round(est), desc="reproduce (all runs)", unit="s", disable=not progress,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} est. s [{elapsed}<{remaining}]",
               position=0, leave=True)
    for j in missing:
        bar.set_description_str(f"reproduce: {j.name} (all runs)")
        t0, load0 = time.time(), _loadavg()
        code, cmd = run_one(j, out, scale, progress)
        record["jobs"][f"run:{j.name}"] = {"wall_s": time.time() - t0,
                                           "status": "done" if code == 0 else f"failed rc={code}",
                                           "command": cmd, "estimate_s": estimate_seconds(j, scale),
                                           "loadavg_start": load0, "loadavg_end": _loadavg()}
        write_json(out / "reproduce.json", record)
        if code in (130, 143):
            raise KeyboardInterrupt
        (session["ran"] if code == 0 else session["failed"]).append(j.name)
        rc = rc or (1 if code != 0 else 0)
        bar.update(estimate_seconds(j, scale))
    bar.close()
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
