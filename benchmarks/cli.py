"""``hybridopt finetune`` and ``hybridopt summarize``.

Bad input (unknown names, bad values, missing files, malformed data, unknown config keys,
inconsistent options) is reported as one line ``hybridopt <cmd>: error: ...`` with exit code 2,
before any model is loaded and without writing anything.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .config import ConfigError, build_config


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse's own convention)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _finetune_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hybridopt finetune", description="Fine-tune an LLM with one of the five methods.")
    p.add_argument("--task", help="sst2, wsc or winogrande")
    p.add_argument("--method", help="fo-full, fo-peft, zo-full, zo-peft or hybrid")
    p.add_argument("--model", help="preset (smollm2-135m, tiny-llama, opt-1.3b, vicuna-7b, llama-7b), HF id or directory")
    p.add_argument("--out", required=True, help="run directory (result.json, checkpoint.pt)")
    p.add_argument("--config", help="experiment config file (JSON) overriding configs/defaults.json")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--eval-batch-size", type=int)
    p.add_argument("--n-train", type=int)
    p.add_argument("--n-dev", type=int)
    p.add_argument("--n-test", type=int)
    p.add_argument("--max-length", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--dtype", help="float32, bfloat16 or float16")
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    p.add_argument("--data-dir", help="folder with <task>/{train,dev,test}.jsonl (default: shipped subsets)")
    p.add_argument("--peft", help="lora, prefix, or a peft config JSON file")
    p.add_argument("--lora-r", type=int)
    p.add_argument("--lr-x", type=float, help="learning rate of the ZO block")
    p.add_argument("--lr-y", type=float, help="learning rate of the FO block")
    p.add_argument("--mu", type=float, help="ZO smoothing radius")
    p.add_argument("--q", type=int, help="ZO directions per step")
    p.add_argument("--estimator", help="central (the theorem's) or forward")
    p.add_argument("--fo-optimizer", help="sgd, momentum or adam")
    p.add_argument("--checkpoint-every", type=int, help="save a checkpoint every K steps (0: only on signals)")
    p.add_argument("--resume", action="store_true", help="continue the unfinished run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a finished or unfinished run in --out")
    p.add_argument("--verify-reconstruction", action="store_true",
                   help="at the end, rebuild the ZO block from the initial model + ZO log and compare bit for bit")
    p.add_argument("--no-progress", action="store_true")
    return p


def _overrides(a: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {"model": a.model, "steps": a.steps, "batch_size": a.batch_size,
                         "eval_every": a.eval_every, "eval_batch_size": a.eval_batch_size,
                         "n_train": a.n_train, "n_dev": a.n_dev, "n_test": a.n_test,
                         "max_length": a.max_length, "seed": a.seed, "dtype": a.dtype, "device": a.device,
                         "data_dir": a.data_dir, "checkpoint_every": a.checkpoint_every}
    peft: dict[str, Any] = {}
    if a.peft is not None:
        if a.peft in ("lora", "prefix"):
            peft["kind"] = a.peft
        else:
            peft.update(kind="config", config_path=a.peft)
    if a.lora_r is not None:
        peft["r"] = a.lora_r
    if peft:
        o["peft"] = peft
    opt = {k: v for k, v in {"lr_x": a.lr_x, "lr_y": a.lr_y, "mu": a.mu, "q": a.q, "estimator": a.estimator,
                             "fo_optimizer": a.fo_optimizer}.items() if v is not None}
    if opt:
        o["optimizer"] = opt
    return o


def _guarded(prog: str, action) -> tuple[int, Any]:
    """Run ``action()``; map input errors to one line + exit 2 and run failures to their code."""
    from .runner import RunError

    try:
        return 0, action()
    except (ConfigError, FileNotFoundError, ValueError) as e:  # ValueError: malformed data lines
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2, None
    except RunError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code, None


def finetune_main(argv: list[str] | None = None) -> int:
    from .runner import run

    a = _finetune_parser().parse_args(argv)

    def action():
        cfg = build_config(a.task, a.method, a.config, _overrides(a))
        return cfg, run(cfg, a.out, resume=a.resume, overwrite=a.overwrite, progress=not a.no_progress,
                        verify=a.verify_reconstruction)

    code, out = _guarded("hybridopt finetune", action)
    if code == 0:
        cfg, result = out
        print(f"{cfg.task}/{cfg.method}: best dev accuracy {result['dev_accuracy']['best']:.4f} at step "
              f"{result['dev_accuracy']['step']}, test accuracy {result['test_accuracy']:.4f} -> "
              f"{Path(a.out) / 'result.json'}")
    return code


def grid_main(argv: list[str] | None = None) -> int:
    from .grid import parse_grid, run_grid

    p = _finetune_parser()
    p.prog = "hybridopt grid"
    p.description = "Learning-rate grid with selection on dev; test accuracy of the selected trial only."
    p.add_argument("--grid", action="append", default=[], metavar="KEY=v1,v2",
                   help="grid axis (lr_x, lr_y, mu, q); repeat for several axes")
    a = p.parse_args(argv)

    def action():
        grid = parse_grid(a.grid)
        cfg = build_config(a.task, a.method, a.config, _overrides(a))
        return run_grid(cfg, grid, a.out, progress=not a.no_progress, overwrite=a.overwrite)

    code, result = _guarded("hybridopt grid", action)
    if code == 0:
        print(f"selected {result['grid']['selected']} (dev {result['dev_accuracy']['best']:.4f}); "
              f"test accuracy {result['test_accuracy']:.4f} -> {Path(a.out) / 'result.json'}")
    return code


# ---- summary tables ----------------------------------------------------------------------------

def collect_results(paths: list[str]) -> list[dict[str, Any]]:
    """Every result.json under the given files/directories (recursively), sorted by task, method."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():  # grid trials are summarised by their grid's result.json
            files.extend(f for f in sorted(p.rglob("result.json")) if "trials" not in f.relative_to(p).parts)
        else:
            raise ConfigError(f"{str(p)!r} does not exist")
    rows = []
    for f in files:
        try:
            r = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{f}: not a readable result file ({e})") from None
        r["_path"] = str(f)
        rows.append(r)
    return sorted(rows, key=lambda r: (r.get("task", ""), r.get("method", ""), r["_path"]))


COLUMNS = ("task", "method", "model", "steps", "dev_best", "dev_step", "test", "s_per_step", "peak_mem_GB", "path")


def _row(r: dict[str, Any]) -> list[str]:
    f = lambda v, fmt: "" if v is None else format(v, fmt)  # noqa: E731
    return [r.get("task", ""), r.get("method", ""), r.get("model", ""), str(r.get("steps", "")),
            f(r["dev_accuracy"]["best"], ".4f"), str(r["dev_accuracy"]["step"]), f(r.get("test_accuracy"), ".4f"),
            f(r.get("seconds_per_step"), ".2f"), f((r.get("peak_memory_bytes") or 0) / 2**30, ".2f"), r["_path"]]


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def summary_csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow(_row(r))
    return buf.getvalue()


def summarize_main(argv: list[str] | None = None) -> int:
    from hybridopt.io import write_text

    p = _Parser(prog="hybridopt summarize", description="Collect result.json files into a table.")
    p.add_argument("paths", nargs="+", help="result.json files or directories searched recursively")
    p.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    p.add_argument("--out", help="write the table to this file (atomically) instead of stdout")
    a = p.parse_args(argv)
    try:
        rows = collect_results(a.paths)
    except ConfigError as e:
        print(f"hybridopt summarize: error: {e}", file=sys.stderr)
        return 2
    text = summary_markdown(rows) if a.format == "markdown" else summary_csv(rows)
    if a.out:
        write_text(a.out, text)
    else:
        sys.stdout.write(text)
    return 0
