"""``hybridopt finetune``, ``grid``, ``export`` and ``summarize``.

Bad input (unknown names, bad values, missing files, malformed data, unknown config keys,
inconsistent options) is reported as one line ``hybridopt <cmd>: error: ...`` with exit code 2,
before any model is loaded and without writing anything.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from hybridopt import HybridConfig

from .checkpoints import Policy
from .config import ConfigError, build_config


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # argparse takes "-1e-3" (and "-inf") for an option: every number, exponent or not, is a value
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$",
                                                   re.IGNORECASE)

    def error(self, message: str):  # one line, exit 2 (argparse's own convention)
        self.exit(2, f"{self.prog}: error: {message}\n")


def quiet_library_warnings() -> None:
    """Hide warnings from transformers/peft internals that a user of the CLI cannot act on."""
    import warnings
    warnings.filterwarnings("ignore", message=r".*`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*past_key_values.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*`torch_dtype` is deprecated", category=FutureWarning)


def _defaults() -> dict[str, Any]:
    from .config import DEFAULTS_FILE
    return json.loads(DEFAULTS_FILE.read_text(encoding="utf-8"))


def _per_method(d: dict[str, Any], key: str) -> str:
    vals = [f"{m} {o[key] if isinstance(o[key], str) else format(o[key], 'g')}"
            for m, o in d["method_defaults"].items() if key in o]
    return "per method: " + ", ".join(vals) if vals else "the optimizer's"


def _finetune_parser() -> argparse.ArgumentParser:
    from hybridopt.methods import METHODS
    from .tasks import BUILTIN

    d = _defaults()
    p = _Parser(prog="hybridopt finetune",
                description="Fine-tune an LLM with one of the five methods on a built-in task or on your own "
                            "data (a task file), with model selection on dev and one test evaluation. Defaults "
                            "come from benchmarks/configs/defaults.json, then --config, then these options.")
    p.add_argument("--task", metavar="NAME|FILE",
                   help=f"a built-in task ({', '.join(BUILTIN)}) or a task file (JSON: data files, prompt, "
                        "labels or target; see the README, 'Your own data')")
    p.add_argument("--method", help=f"{', '.join(METHODS)} (hybrid: ZO on the base weights, FO on the adapter)")
    p.add_argument("--model", help=f"preset (smollm2-135m, tiny-llama, opt-1.3b, vicuna-7b, llama-7b), a Hugging "
                                   f"Face id or a local model directory (default: {d['model']})")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="run directory: result.json, metrics.jsonl, selected.pt, checkpoint.pt, model/")
    p.add_argument("--config", metavar="FILE", help="experiment config file (JSON) overriding the defaults file")
    p.add_argument("--steps", type=int, metavar="N", help=f"optimizer steps (default: {d['steps']})")
    p.add_argument("--batch-size", type=int, metavar="B",
                   help=f"training examples per step (default: {d['batch_size']})")
    p.add_argument("--eval-every", type=int, metavar="K",
                   help=f"evaluate on dev every K steps, and at step 0 and the last step (default: {d['eval_every']})")
    p.add_argument("--eval-batch-size", type=int, metavar="B",
                   help=f"sequences per forward when evaluating (default: {d['eval_batch_size']})")
    p.add_argument("--n-train", type=int, metavar="N",
                   help="use the first N training examples (default: all)" if d["n_train"] is None else
                   f"use the first N training examples (default: {d['n_train']})")
    p.add_argument("--n-dev", type=int, metavar="N", help=f"use the first N dev examples (default: {d['n_dev']})")
    p.add_argument("--n-test", type=int, metavar="N", help="use the first N test examples (default: all)")
    p.add_argument("--max-length", type=int, metavar="T",
                   help=f"longest sequence in tokens; a longer prompt is an error unless --truncate-prompts "
                        f"(default: {d['max_length']})")
    p.add_argument("--truncate-prompts", action="store_true", default=None,
                   help="cut prompts longer than --max-length from the left, with a warning (default: an error)")
    p.add_argument("--seed", type=int,
                   help=f"seed of the reshuffling, the adapter's initialisation and the ZO directions (default: {d['seed']})")
    p.add_argument("--dtype", help=f"float32, bfloat16 or float16 (default: {d['dtype']})")
    p.add_argument("--device", help=f"cpu, cuda or cuda:N (default: {d['device']})")
    p.add_argument("--data-dir", metavar="DIR",
                   help="read the task's splits from DIR/<task>/{train,dev,test}.jsonl|csv instead (default: the task's data)")
    p.add_argument("--peft", metavar="KIND|FILE",
                   help=f"lora, prefix, or a peft config JSON file (default: {d['peft']['kind']})")
    p.add_argument("--lora-r", type=int, metavar="R", help=f"LoRA rank (default: {d['peft']['r']})")
    p.add_argument("--lora-alpha", type=float, metavar="A",
                   help=f"LoRA scaling alpha; the update is scaled by alpha/r (default: {d['peft']['alpha']})")
    p.add_argument("--lora-targets", metavar="M1,M2",
                   help="comma-separated names of the modules LoRA adapts (default: q_proj,v_proj where the model has them)")
    p.add_argument("--lr-x", type=float, help=f"learning rate of the ZO block ({_per_method(d, 'lr_x')})")
    p.add_argument("--lr-y", type=float, help=f"learning rate of the FO block ({_per_method(d, 'lr_y')})")
    p.add_argument("--mu", type=float, help=f"ZO smoothing radius ({_per_method(d, 'mu')})")
    p.add_argument("--q", type=int, help=f"ZO directions per step (default: {HybridConfig().q})")
    p.add_argument("--estimator", help="paired (the theorem's estimator, f(x+mu u) and f(x-mu u) in one "
                                       "doubled-batch forward), central (the same from two forwards) or forward "
                                       f"(one-sided) (default: {HybridConfig().estimator})")
    p.add_argument("--direction", help="ZO direction law: gaussian (the theorem's), rademacher or sphere "
                                       f"(default: {HybridConfig().direction})")
    p.add_argument("--zo-rule", help="ZO update rule: sgd (the theorem's) or momentum (ZO-SGD with momentum) "
                                     f"(default: {HybridConfig().zo_rule})")
    p.add_argument("--fo-optimizer", help=f"sgd, momentum or adam ({_per_method(d, 'fo_optimizer')})")
    p.add_argument("--checkpoint-every", type=int, metavar="K",
                   help="save a checkpoint every K steps and keep the final one; 0: only by time, with each ZO "
                        f"snapshot and on SIGINT/SIGTERM (default: {d['checkpoint_every']})")
    p.add_argument("--checkpoint-minutes", type=float, metavar="M", default=Policy.checkpoint_minutes,
                   help="save a checkpoint every M minutes, so a killed run loses at most that; 0: not by time "
                        f"(default: {Policy.checkpoint_minutes:g})")
    p.add_argument("--snapshot-every", type=int, metavar="K", default=Policy.snapshot_every,
                   help="store the ZO block (the base weights) every K steps: resuming and restoring the selected "
                        "step replay at most K-1 steps of ZO updates; costs one copy of the ZO block on disk "
                        f"(default: {Policy.snapshot_every})")
    p.add_argument("--snapshot-minutes", type=float, metavar="M", default=Policy.snapshot_minutes,
                   help=f"and at least every M minutes; 0: by steps only (default: {Policy.snapshot_minutes:g})")
    p.add_argument("--resume", action="store_true", help="continue the unfinished run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a finished or unfinished run in --out")
    p.add_argument("--save-model", action="store_true",
                   help="write the selected model to OUT/model: updated base weights + config + tokenizer, and the "
                        "adapter in OUT/model/adapter (loadable with transformers + peft)")
    p.add_argument("--merge", action="store_true", help="with --save-model: merge the adapter into the weights")
    p.add_argument("--verify-reconstruction", action="store_true",
                   help="at the end, rebuild the ZO block from the initial model + ZO log and compare bit for bit")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars or status lines on stderr (default: shown)")
    return p


def _overrides(a: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {"model": a.model, "steps": a.steps, "batch_size": a.batch_size,
                         "eval_every": a.eval_every, "eval_batch_size": a.eval_batch_size,
                         "n_train": a.n_train, "n_dev": a.n_dev, "n_test": a.n_test,
                         "max_length": a.max_length, "truncate_prompts": a.truncate_prompts, "seed": a.seed,
                         "dtype": a.dtype, "device": a.device,
                         "data_dir": a.data_dir, "checkpoint_every": a.checkpoint_every}
    peft: dict[str, Any] = {}
    if a.peft is not None:
        if a.peft in ("lora", "prefix"):
            peft["kind"] = a.peft
        elif a.peft.endswith(".json") or os.sep in a.peft or os.path.exists(a.peft):
            peft.update(kind="config", config_path=a.peft)
        else:
            raise ConfigError(f"--peft {a.peft!r}: not a peft kind (lora, prefix) nor a peft config file (JSON)")
    if a.lora_r is not None:
        peft["r"] = a.lora_r
    if a.lora_alpha is not None:
        peft["alpha"] = int(a.lora_alpha) if float(a.lora_alpha).is_integer() else a.lora_alpha
    if a.lora_targets is not None:
        peft["target_modules"] = [t.strip() for t in a.lora_targets.split(",") if t.strip()]
    if peft:
        o["peft"] = peft
    opt = {k: v for k, v in {"lr_x": a.lr_x, "lr_y": a.lr_y, "mu": a.mu, "q": a.q, "estimator": a.estimator,
                             "direction": a.direction, "zo_rule": a.zo_rule,
                             "fo_optimizer": a.fo_optimizer}.items() if v is not None}
    if opt:
        o["optimizer"] = opt
    return o


def _check_target(option: str, path: str) -> None:
    """A path to be written (a directory, or a file's folder) must be writable and not below a file."""
    from hybridopt.io import write_problem

    problem = write_problem(path)
    if problem:
        raise ConfigError(f"{option} {path!r}: {problem}")


def _fail(prog: str, message: str) -> None:
    """One line per problem, each prefixed like argparse's errors."""
    for line in str(message).splitlines() or [""]:
        print(f"{prog}: error: {line}", file=sys.stderr)


def _guarded(prog: str, action) -> tuple[int, Any]:
    """Run ``action()``; map input errors to one line (per bad record) + exit 2 and run failures to their code."""
    from .runner import RunError

    quiet_library_warnings()
    try:
        return 0, action()
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as e:  # ValueError: malformed data
        _fail(prog, str(e))
        return 2, None
    except RunError as e:
        _fail(prog, str(e))
        return e.exit_code, None


def _policy(a: argparse.Namespace) -> Policy:
    """Checkpoint and snapshot intervals (``checkpoint_every`` comes from the configuration)."""
    return Policy(checkpoint_minutes=a.checkpoint_minutes, snapshot_every=a.snapshot_every,
                  snapshot_minutes=a.snapshot_minutes)


def _collapse_warning(prog: str, result: dict[str, Any]) -> None:
    c = (result.get("reliability") or {}).get("collapse")
    if c:
        print(f"{prog}: warning: the model collapsed at step {c['step']} (loss {c['loss']:.6g} = the uniform "
              f"prediction's, zero gradients); the selected step and its test metric are those of a broken run",
              file=sys.stderr)


def _outcome(result: dict[str, Any]) -> str:
    m = result["dev_metric"]
    test = "no test split" if result["test_metric"] is None else f"test {m['name']} {result['test_metric']:.4f}"
    return f"best dev {m['name']} {m['best']:.4f} at step {m['step']}, {test}"


def finetune_main(argv: list[str] | None = None) -> int:
    from .runner import MODEL_DIR, run

    a = _finetune_parser().parse_args(argv)
    if a.merge and not a.save_model:
        _fail("hybridopt finetune", "--merge applies to --save-model")
        return 2

    def action():
        cfg = build_config(a.task, a.method, a.config, _overrides(a))
        return cfg, run(cfg, a.out, resume=a.resume, overwrite=a.overwrite, progress=not a.no_progress,
                        verify=a.verify_reconstruction, save_model=a.save_model, merge=a.merge, policy=_policy(a))

    code, out = _guarded("hybridopt finetune", action)
    if code == 0:
        cfg, result = out
        print(f"{result['task']}/{cfg.method}: {_outcome(result)} -> {Path(a.out) / 'result.json'}")
        _collapse_warning("hybridopt finetune", result)
        if "export" in result:
            e = result["export"]
            same = "identical" if e["exact"] else f"within {abs(e['reloaded_dev_loss'] - e['trained_dev_loss']):.1e}"
            print(f"model of step {result['dev_metric']['step']} in {Path(a.out) / MODEL_DIR}"
                  f"{' (adapter merged)' if e['merged'] else ''}; reloaded with transformers, its dev loss on "
                  f"{e['examples']} examples is {e['reloaded_dev_loss']:.6f} ({same} to the trained model's)")
    return code


def export_main(argv: list[str] | None = None) -> int:
    from .export import export_run

    p = _Parser(prog="hybridopt export",
                description="Write the selected model of a finished run as a directory that transformers loads: "
                            "the updated base weights (safetensors) + config + tokenizer, and the adapter in "
                            "DIR/adapter (peft) or merged into the weights. The export is reloaded and its dev "
                            "loss compared with the trained model's.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out directory of a finished `hybridopt finetune` run")
    p.add_argument("--out", required=True, metavar="DIR", help="the directory to write (must not exist)")
    p.add_argument("--merge", action="store_true",
                   help="merge the adapter into the weights (one model directory, no peft needed to load it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--no-verify", action="store_true",
                   help="do not reload the export to check its dev loss (default: checked)")
    p.add_argument("--no-progress", action="store_true", help="no status lines on stderr (default: shown)")
    a = p.parse_args(argv)

    def action():
        _check_target("--out", a.out)
        return export_run(a.run_dir, a.out, merge=a.merge, overwrite=a.overwrite, verify=not a.no_verify,
                          progress=not a.no_progress)

    code, rep = _guarded("hybridopt export", action)
    if code == 0:
        print(f"exported the {rep['method']} model of step {rep['step']} to {rep['out']}"
              + (" (adapter merged)" if a.merge else ""))
        if "reloaded_dev_loss" in rep:
            same = "identical" if rep["exact"] else f"differs by {abs(rep['reloaded_dev_loss'] - rep['trained_dev_loss']):.2e} (merged: float rounding)"
            print(f"dev loss on {rep['examples']} examples: trained {rep['trained_dev_loss']:.6f}, reloaded from "
                  f"{rep['out']} {rep['reloaded_dev_loss']:.6f} ({same})")
        if "adapter_only_dev_loss" in rep:
            print(f"(the adapter alone on the original base, what a bare save_pretrained() keeps: "
                  f"{rep['adapter_only_dev_loss']:.6f})")
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
        return run_grid(cfg, grid, a.out, progress=not a.no_progress, overwrite=a.overwrite, policy=_policy(a))

    code, result = _guarded("hybridopt grid", action)
    if code == 0:
        print(f"selected {result['grid']['selected']}: {_outcome(result)} -> {Path(a.out) / 'result.json'}")
        for w in result["grid"].get("warnings", []):
            print(f"hybridopt grid: warning: {w}", file=sys.stderr)
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
        if not isinstance(r, dict) or not any(isinstance(r.get(k), dict) for k in ("dev_metric", "dev_accuracy")):
            raise ConfigError(f"{f}: not a result file of hybridopt finetune or grid (no dev_metric)")
        r["_path"] = str(f)
        rows.append(r)
    return sorted(rows, key=lambda r: (r.get("task", ""), r.get("method", ""), r["_path"]))


COLUMNS = ("task", "method", "model", "steps", "metric", "dev_best", "dev_step", "test", "s_per_step", "peak_mem_GB",
           "path")


def _row(r: dict[str, Any]) -> list[str]:
    f = lambda v, fmt: "" if v is None else format(v, fmt)  # noqa: E731
    dev = r.get("dev_metric") or {"name": "accuracy", **r["dev_accuracy"]}  # results written before task files
    test = r.get("test_metric", r.get("test_accuracy"))
    return [r.get("task", ""), r.get("method", ""), r.get("model", ""), str(r.get("steps", "")), dev["name"],
            f(dev["best"], ".4f"), str(dev["step"]), f(test, ".4f"),
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
        if a.out:
            if Path(a.out).is_dir():
                raise ConfigError(f"--out {a.out!r} is a directory; give the file to write")
            _check_target("--out", str(Path(a.out).parent))
        rows = collect_results(a.paths)
        if not rows:
            raise ConfigError(f"no result.json under {', '.join(repr(p) for p in a.paths)} (grid trials are "
                              "summarised by their grid's result.json)")
    except ConfigError as e:
        print(f"hybridopt summarize: error: {e}", file=sys.stderr)
        return 2
    text = summary_markdown(rows) if a.format == "markdown" else summary_csv(rows)
    if a.out:
        write_text(a.out, text)
    else:
        sys.stdout.write(text)
    return 0
