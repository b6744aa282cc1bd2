"""``hybridopt reproduce``: run whatever results are missing, then draw every figure and table.

    hybridopt reproduce [--scale quick|default|paper] [--out DIR] [--dry-run] [--figures-only]
                        [--device cpu|cuda] [--no-progress]

1. reads the scale preset ``benchmarks/configs/scales/<scale>.json`` and copies it to
   ``DIR/scale.json`` (a folder holds one scale: a different preset there is refused);
2. runs what is missing — the simulator (``DIR/simulation/simulation.json``) and each
   fine-tuning run (``DIR/runs/<group>/<method>/result.json``; an unfinished run with a
   ``checkpoint.pt`` is resumed) — and reuses everything that exists;
3. draws every figure (``DIR/figures``) and table (``DIR/tables``) from the result files only,
   writes ``DIR/REPORT.md`` and checks that every number in it is traced to a file.

Progress: one overall bar (ETA from the preset's measured step times, corrected as runs finish)
plus each run's own bar.  Exit code 0 when everything ran and the report verified, 1 when a
run failed (the report is still drawn from what exists), 2 on bad input, 130 on Ctrl-C (the
running fine-tuning run saves a checkpoint; rerun the same command to resume).
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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hybridopt.benchmarks.config import CONFIG_DIR
from hybridopt.io import write_json

SCALES_DIR = CONFIG_DIR / "scales"
SCALES = ("quick", "default", "paper")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def load_scale(name_or_path: str) -> dict[str, Any]:
    p = Path(name_or_path)
    if not p.suffix:
        p = SCALES_DIR / f"{name_or_path}.json"
    if not p.is_file():
        raise ValueError(f"unknown scale {name_or_path!r}: no preset {p} (valid: {', '.join(SCALES)})")
    return json.loads(p.read_text(encoding="utf-8"))


def group_name(g: dict[str, Any], scale: dict[str, Any]) -> str:
    models = {x.get("model", scale["common"].get("model")) for x in scale["groups"]}
    tasks = [x["task"] for x in scale["groups"]]
    if len(models) > 1 and tasks.count(g["task"]) > 1:
        return f"{g['task']}@{g.get('model', scale['common'].get('model'))}"
    return g["task"]


def plan_runs(scale: dict[str, Any], device: str | None = None) -> list[dict[str, Any]]:
    """One entry per fine-tuning run: group, task, method and the override dict for ``build_config``."""
    jobs = []
    for g in scale["groups"]:
        for m in g["methods"]:
            over = {k: v for k, v in scale["common"].items()}
            over.update({k: v for k, v in g.items() if k not in ("task", "methods", "steps", "method_overrides")})
            steps = g["steps"]
            over["steps"] = steps.get(m, steps.get("default")) if isinstance(steps, dict) else steps
            mo = {**scale.get("method_overrides", {}).get(m, {}), **g.get("method_overrides", {}).get(m, {})}
            for k, v in mo.items():
                over[k] = {**over.get(k, {}), **v} if isinstance(v, dict) else v
            if device:
                over["device"] = device
            jobs.append({"group": group_name(g, scale), "task": g["task"], "method": m, "overrides": over})
    return jobs


def estimate_seconds(job: dict[str, Any], scale: dict[str, Any]) -> float:
    """Estimated wall seconds of one run from the preset's ``estimate`` block (steps × seconds per
    step + evaluated examples × seconds per example + a fixed per-run overhead)."""
    est = scale.get("estimate", {})
    sps = est.get("seconds_per_step", {})
    key = f"{job['task']}/{job['method']}"
    o = job["overrides"]
    per = sps.get(f"{o.get('model')}/{job['method']}", sps.get(key, sps.get(job["method"], sps.get("default", 1.0))))
    sizes = est.get("split_sizes", {}).get(job["task"], {})
    n_dev = o.get("n_dev") or sizes.get("dev", 500)
    n_test = o.get("n_test") or sizes.get("test", 500)
    n_eval = (o["steps"] // o.get("eval_every", 10) + 1) * n_dev + n_test
    spe = est.get("seconds_per_eval_example", 0.05)
    spe = spe.get(job["task"], spe.get("default", 0.05)) if isinstance(spe, dict) else spe
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
    return {"schema": "hybridopt.reproduce/1", "jobs": {}, "sessions": []}


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

def _model_ready(jobs: list[dict[str, Any]]) -> bool:
    if all(j["overrides"].get("model") != "smollm2-135m" for j in jobs):
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


def _simulate_subset(out_dir: Path, sim: dict, progress: bool) -> int:
    """The simulator's sweep adapted to a scale's time budget, with its own functions (plan,
    run_tasks, summarize, plot_all, as ``hybridopt simulate`` does): the P1 tasks of
    ``exclude_p1_families`` are dropped, and ``p2_from_full`` = {"T": epochs, "count": k} adds the
    first k fixed-step (P2) tasks of the full sweep, shortened to T epochs."""
    import os
    import types

    from hybridopt.io import write_json as _wj
    from hybridopt.theory import sim_cli, sim_plots
    from hybridopt.theory import simulator as S

    mode = "quick" if sim.get("quick") else "full"
    drop = {f.upper() for f in sim.get("exclude_p1_families", [])}
    tasks = [t for t in S.plan(mode, families=sim.get("families"))
             if not (t["kind"] == "p1" and S.Instance(**t["instance"]).family in drop)]
    extra = sim.get("p2_from_full")
    if extra and not any(t["kind"] == "p2" for t in tasks):
        p2 = [t for t in S.plan("full", families=sim.get("families")) if t["kind"] == "p2"][: extra.get("count", 3)]
        tasks += [dict(t, T=int(extra.get("T", t["T"]))) for t in p2]
    workers = int(sim.get("workers", 2))
    load0 = os.getloadavg() if hasattr(os, "getloadavg") else None
    t0 = time.perf_counter()
    results = sim_cli.run_tasks(tasks, workers, progress=progress)
    wall = time.perf_counter() - t0
    args = types.SimpleNamespace(quick=mode == "quick", workers=workers, certified=False)
    if load0 is not None:
        args.loadavg = dict(start=list(load0), end=list(os.getloadavg()))
    consts = sim_cli.instance_constants(tasks)
    p1 = [t["instance"] for t in tasks if t["kind"] in ("p1", "p3")]
    big = max(p1, key=lambda i: S.Instance(**i).replicates * S.build(S.Instance(**i))[3]["d_x"])
    ec = {S.Instance(**big).key(): sim_cli.epoch_cost(big)}
    data = sim_cli.summarize(results, tasks, consts, args, wall, ec)
    data["reduced"] = {"excluded_p1_families": sorted(drop), "p2_from_full": extra}
    _wj(out_dir / "simulation.json", data)
    sim_plots.plot_all(out_dir / "simulation.json", out_dir)
    return 0


def run_simulator(out: Path, scale: dict, record: dict, progress: bool) -> bool:
    from hybridopt.theory import sim_cli

    sim = scale.get("simulator", {})
    argv = ["--out", str(out / "simulation")]
    if sim.get("quick"):
        argv.append("--quick")
    for f in sim.get("families") or []:
        argv += ["--family", f]
    if sim.get("workers"):
        argv += ["--workers", str(sim["workers"])]
    if not progress:
        argv.append("--no-progress")
    import torch

    threads = torch.get_num_threads()   # the simulator sets one thread in this process; restore it after
    t0 = time.time()
    if sim.get("exclude_p1_families") or sim.get("p2_from_full"):
        rc = _simulate_subset(out / "simulation", sim, progress)
        notes = []
        if sim.get("exclude_p1_families"):
            notes.append("without the P1 tasks of famil" + ("ies " if len(sim["exclude_p1_families"]) > 1 else "y ")
                         + ", ".join(sim["exclude_p1_families"]))
        if sim.get("p2_from_full"):
            notes.append("with the full sweep's first fixed-step (P2) tasks, shortened")
        cmd = ("hybridopt simulate " + " ".join(shlex.quote(a if a != str(out / "simulation") else "DIR/simulation")
                                                 for a in argv) + " (adapted: " + "; ".join(notes) + ")")
    else:
        rc = sim_cli.main(argv)
        cmd = "hybridopt simulate " + " ".join(shlex.quote(a if a != str(out / "simulation") else "DIR/simulation")
                                                for a in argv)
    torch.set_num_threads(threads)
    record["jobs"]["simulation"] = {"wall_s": time.time() - t0, "status": "done" if rc == 0 else f"failed rc={rc}",
                                    "command": cmd}
    return rc == 0


def run_one(job: dict, out: Path, scale: dict, progress: bool) -> tuple[int, str]:
    """One fine-tuning run; in a subprocess (own peak memory) unless the preset says otherwise."""
    from hybridopt.benchmarks.config import build_config
    from hybridopt.benchmarks.runner import CHECKPOINT, RunError, run

    run_dir = out / "runs" / job["group"] / job["method"]
    cfg = build_config(job["task"], job["method"], None, job["overrides"])
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
            print(f"reproduce: {job['group']}/{job['method']}: {e}", file=sys.stderr)
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


def draw_all(out: Path) -> list[Path]:
    from . import fig_bound, fig_cost, fig_curves, fig_steps, fig_theory

    files: list[Path] = []
    for mod in (fig_theory, fig_curves, fig_steps, fig_bound, fig_cost):
        files += mod.draw(out)
    return files


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="hybridopt reproduce", description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("--scale", default="default", help="quick, default or paper (or a preset JSON file)")
    p.add_argument("--out", help="output folder (default: ./reproduce-<scale>)")
    p.add_argument("--device", help="override the preset's device (cpu, cuda, cuda:N)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the time estimate; run nothing")
    p.add_argument("--figures-only", action="store_true", help="run nothing; redraw figures and report")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    t_start = time.time()
    try:
        scale = load_scale(a.scale)
    except (ValueError, json.JSONDecodeError) as e:
        print(f"hybridopt reproduce: error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out or f"reproduce-{scale['name']}")
    existing = out / "scale.json"
    if existing.is_file():
        old = json.loads(existing.read_text(encoding="utf-8"))
        if {k: v for k, v in old.items() if k != "estimate"} != {k: v for k, v in scale.items() if k != "estimate"}:
            print(f"hybridopt reproduce: error: {out} holds results of another preset ({old.get('name')!r}, or "
                  f"an edited one); use another --out", file=sys.stderr)
            return 2
    jobs = plan_runs(scale, a.device)
    try:
        from hybridopt.benchmarks.config import ConfigError, build_config

        for j in jobs:
            build_config(j["task"], j["method"], None, j["overrides"])
    except ConfigError as e:
        print(f"hybridopt reproduce: error: preset {scale['name']!r}: {e}", file=sys.stderr)
        return 2
    missing = [j for j in jobs if not (out / "runs" / j["group"] / j["method"] / "result.json").is_file()]
    sim_missing = not (out / "simulation" / "simulation.json").is_file()
    est = sum(estimate_seconds(j, scale) for j in missing) + (
        scale.get("estimate", {}).get("seconds_model_preparation", 0) if missing and not _model_ready(missing) else 0) + (
        scale.get("estimate", {}).get("seconds_simulator", 60) if sim_missing else 0)
    print(f"reproduce: scale {scale['name']!r} -> {out}/  ({len(jobs) - len(missing)} of {len(jobs)} runs and "
          f"{'no' if sim_missing else 'the'} simulation present; to run: {len(missing)} runs"
          f"{' + simulator' if sim_missing else ''}, estimated {_duration(est)})", file=sys.stderr)
    if a.dry_run:
        for j in missing:
            print(f"  {j['group']}/{j['method']}: {j['overrides']['steps']} steps, ~{estimate_seconds(j, scale):.0f} s")
        return 0
    write_json(existing, scale)
    record = _load_record(out)
    session: dict[str, Any] = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "scale": scale["name"], "argv": list(argv or sys.argv[1:]), "ran": [], "failed": [],
                               "reused": [f"{j['group']}/{j['method']}" for j in jobs if j not in missing]}
    record.update(git_commit=_git(), machine=_machine())
    progress = not a.no_progress
    rc = 0
    try:
        if not a.figures_only:
            if sim_missing:
                if not run_simulator(out, scale, record, progress):
                    session["failed"].append("simulation")
                    rc = 1
                else:
                    session["ran"].append("simulation")
                write_json(out / "reproduce.json", record)
            if missing:
                models = {j["overrides"].get("model") for j in missing}
                for m in models:
                    prepare_model(m, record, progress)
                from tqdm.auto import tqdm

                bar = tqdm(total=round(est), desc="reproduce (all runs)", unit="s", disable=not progress,
                           bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} est. s "
                                      "[{elapsed}<{remaining}]", position=0, leave=True)
                for j in missing:
                    name = f"{j['group']}/{j['method']}"
                    bar.set_description_str(f"reproduce: {name} (all runs)")
                    t0 = time.time()
                    code, cmd = run_one(j, out, scale, progress)
                    wall = time.time() - t0
                    record["jobs"][f"run:{name}"] = {"wall_s": wall, "status": "done" if code == 0 else f"failed rc={code}",
                                                     "command": cmd, "estimate_s": estimate_seconds(j, scale)}
                    write_json(out / "reproduce.json", record)
                    if code in (130, 143):
                        raise KeyboardInterrupt
                    (session["ran"] if code == 0 else session["failed"]).append(name)
                    if code != 0:
                        rc = 1
                    bar.update(estimate_seconds(j, scale))
                bar.close()
        t_draw = time.time()
        from . import report

        files = draw_all(out)
        session["draw_s"] = time.time() - t_draw
        session["wall_s"] = time.time() - t_start
        record["sessions"].append(session)
        record["totals"] = {"jobs_wall_s": sum(v["wall_s"] for v in record["jobs"].values())}
        write_json(out / "reproduce.json", record)
        rep, problems = report.write(out, files)
    except KeyboardInterrupt:
        session["interrupted"] = True
        session["wall_s"] = time.time() - t_start
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
