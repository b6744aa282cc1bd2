"""``hybridopt lr-scan``: the largest stable ZO learning rate, found by short probe runs.

    hybridopt lr-scan --lr-x 1e-4,3e-4,1e-3 --out DIR [--diverge-factor 10] [finetune options ...]

Each value v runs ``hybridopt finetune <finetune options> --lr-x v --out DIR/lrx<v>`` (default
method hybrid) in its own process and watches its ``metrics.jsonl``: the probe **diverged** at
step t when the training loss of step t is not finite or exceeds ``diverge_factor`` times the
loss of the first step (the loss of a step is measured on that step's own mini-batch, before
its update, so the first step's loss is the model's before training).  A diverged probe is
stopped there (SIGTERM: the run saves its checkpoint and exits) instead of running its budget
on a broken model.  A probe that finishes its steps is *stable over that budget* — a finite
horizon, not a guarantee: the study's longer runs are what show it over theirs.

Writes ``DIR/scan.json`` (per value: status, the step it diverged at, first / largest / mean
of the last five training losses, the dev curve, the command) and prints a Markdown table with
the largest stable value.  A run whose collapse detector fired (the loss of a uniform prediction
with zero gradients: the model stopped depending on its input) counts as **collapsed**, not stable.  Values run in the order given; a value whose ``DIR/lrx<v>/result.json``
exists is read, not rerun.  Exit code 0, 2 on bad input (the finetune options are checked by
``hybridopt finetune`` itself before it loads a model), 1 when a probe failed for another reason.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hybridopt.io import write_json

from .schema import DIVERGE_FACTOR, SchemaError, diverged_at
from .schema import load as load_result

#: seconds between two reads of a probe's metrics.jsonl
POLL_S = 0.5


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _values(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lr-x {text!r}: comma-separated positive numbers expected") from None
    if not vals or not all(math.isfinite(v) and v > 0 for v in vals):
        raise argparse.ArgumentTypeError(f"--lr-x {text!r}: comma-separated positive numbers expected")
    return vals


class _Events:
    """The events of a metrics.jsonl being written, read incrementally: each :meth:`read` parses
    only the complete lines appended since the last one (a torn last line waits for its end)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.rows = path, 0, []

    def read(self) -> list[dict[str, Any]]:
        if self.path.is_file():
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
            done = chunk.rfind(b"\n") + 1
            self.offset += done
            for line in chunk[:done].decode("utf-8").splitlines():
                try:
                    self.rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return self.rows


def _read_events(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a metrics.jsonl."""
    return _Events(path).read()


def summarize_probe(events: list[dict[str, Any]], factor: float) -> dict[str, Any]:
    losses = [float(e["loss"]) for e in events if e.get("event") == "step"]
    dev = [[e["step"], e["value"]] for e in events if e.get("event") == "eval" and e.get("split") == "dev"]
    finite = [v for v in losses if math.isfinite(v)]
    return {"steps_run": len(losses), "diverged_at": diverged_at(losses, factor),
            "loss_first": losses[0] if losses else None, "loss_max": max(finite) if finite else None,
            "loss_last5_mean": statistics.fmean(losses[-5:]) if losses and all(map(math.isfinite, losses[-5:])) else None,
            "dev_curve": dev}


def _collapse(run_dir: Path) -> int | None:
    """The step where the finished run's collapse detector fired (the uniform-prediction loss with
    zero gradients, ``result.json`` ``reliability.collapse``), else None."""
    try:
        c = (load_result(run_dir / "result.json").reliability or {}).get("collapse")
    except SchemaError:   # no (complete) result: the probe did not finish
        return None
    return int(c["step"]) if c else None


def _fmt_lr(v: float) -> str:
    return f"{v:g}"


def check_finetune_options(rest: list[str], lr_x: float) -> str | None:
    """The problem with the finetune options, found as ``hybridopt finetune`` finds it (its parser
    and configuration builder), before any probe starts; None when they are fine."""
    import contextlib
    import io

    from .cli import _finetune_parser, _overrides
    from .config import ConfigError, build_config

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            a = _finetune_parser().parse_args([*rest, "--lr-x", repr(lr_x), "--out", "unused"])
    except SystemExit:
        text = err.getvalue().strip().splitlines()
        return text[-1].split("error: ", 1)[-1] if text else "bad finetune options"
    try:
        build_config(a.task, a.method, a.config, _overrides(a))
    except ConfigError as e:
        return str(e)
    return None


def run_probe(v: float, rest: list[str], out: Path, factor: float, progress: bool) -> dict[str, Any]:
    run_dir = out / f"lrx{_fmt_lr(v)}"
    argv = ["finetune", *rest, "--lr-x", repr(v), "--out", str(run_dir), "--no-progress"]
    shown = "hybridopt " + " ".join(shlex.quote(a if a != str(run_dir) else f"DIR/lrx{_fmt_lr(v)}") for a in argv)
    metrics = run_dir / "metrics.jsonl"
    if (run_dir / "result.json").is_file():
        s = summarize_probe(_read_events(metrics), factor)
        collapse = _collapse(run_dir)
        status = "diverged" if s["diverged_at"] else "collapsed" if collapse is not None else "stable"
        return {"lr_x": v, "command": shown, "status": status, "reused": True,
                **dict(s, diverged_at=s["diverged_at"] or collapse)}
    if run_dir.exists():   # a probe stopped before its end (diverged, or interrupted): run it again
        argv.insert(-1, "--overwrite")
    if progress:
        print(f"lr-scan: lr_x={_fmt_lr(v)} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    events = _Events(metrics)
    # the child's stderr goes to a file, not a pipe: a pipe nobody reads while polling can fill and block it
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8") as errf:
        child = subprocess.Popen([sys.executable, "-m", "hybridopt", *argv], stderr=errf)
        stopping = False
        try:
            while child.poll() is None:
                time.sleep(POLL_S)
                if not stopping and diverged_at([float(e["loss"]) for e in events.read()
                                                 if e.get("event") == "step"], factor) is not None:
                    stopping = True
                    child.send_signal(signal.SIGTERM)   # saves its checkpoint after the current step, exits
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
            child.wait()
            raise
        errf.seek(0)
        err = errf.read()
    s = summarize_probe(events.read(), factor)
    rc = child.returncode
    collapse = _collapse(run_dir)
    if s["diverged_at"] is not None:
        status = "diverged"
    elif collapse is not None:
        status, s["diverged_at"] = "collapsed", collapse
    elif rc == 0:
        status = "stable"
    elif rc == 2:
        line = (err or "").strip().splitlines()
        raise ValueError(line[-1] if line else f"hybridopt finetune exited 2 for lr_x={v}")
    elif "non-finite" in (err or ""):
        status, s["diverged_at"] = "diverged", s["steps_run"] + 1
    else:
        status = f"failed (exit {rc})"
        sys.stderr.write(err or "")
    return {"lr_x": v, "command": shown, "status": status, "wall_s": time.perf_counter() - t0, "reused": False, **s}


def table(rows: list[dict[str, Any]]) -> str:
    def f(x, fmt):
        return "–" if x is None else format(x, fmt)
    lines = ["| lr_x | status | steps run | first loss | largest loss | mean of last five | last dev |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        st = r["status"] + (f" at step {r['diverged_at']}" if r["status"] in ("diverged", "collapsed") else "")
        dev = f"{r['dev_curve'][-1][1]:.3f} (step {r['dev_curve'][-1][0]})" if r["dev_curve"] else "–"
        lines.append(f"| {_fmt_lr(r['lr_x'])} | {st} | {r['steps_run']} | {f(r['loss_first'], '.4f')} | "
                     f"{f(r['loss_max'], '.4g')} | {f(r['loss_last5_mean'], '.4f')} | {dev} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="hybridopt lr-scan", description=__doc__.split("\n\n")[0].replace("``", ""),
                epilog="Every other option is passed to `hybridopt finetune` (default --method hybrid).")
    p.add_argument("--lr-x", type=_values, required=True, metavar="V1,V2,...", help="ZO learning rates to probe")
    p.add_argument("--out", required=True, help="scan folder: DIR/lrx<v>/ per probe, DIR/scan.json")
    p.add_argument("--diverge-factor", type=float, default=DIVERGE_FACTOR,
                   help=f"diverged: a step's loss above this many times the first step's (default {DIVERGE_FACTOR:g})")
    p.add_argument("--no-progress", action="store_true")
    a, rest = p.parse_known_args(argv)
    if not (math.isfinite(a.diverge_factor) and a.diverge_factor > 1):
        p.error(f"--diverge-factor {a.diverge_factor}: a number above 1 expected")
    if any(x in ("--out", "--lr-x") or x.startswith(("--out=", "--lr-x=")) for x in rest):
        p.error("--out and --lr-x are given once, to lr-scan")
    if "--method" not in rest and not any(x.startswith("--method=") for x in rest):
        rest = ["--method", "hybrid", *rest]
    if (problem := check_finetune_options(rest, a.lr_x[0])) is not None:
        print(f"hybridopt lr-scan: error: {problem}", file=sys.stderr)
        return 2
    out = Path(a.out)
    rows: list[dict[str, Any]] = []
    # diverged probes of an earlier scan with the same factor are not rerun (stable ones are read back)
    previous: dict[float, dict[str, Any]] = {}
    if (out / "scan.json").is_file():
        try:
            old = json.loads((out / "scan.json").read_text(encoding="utf-8"))
            if old.get("diverge_factor") == a.diverge_factor:
                previous = {r["lr_x"]: r for r in old.get("probes", []) if r.get("status") in ("diverged", "collapsed")}
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    try:
        for v in a.lr_x:
            done = previous.get(v)
            rows.append(dict(done, reused=True) if done else run_probe(v, rest, out, a.diverge_factor,
                                                                       not a.no_progress))
            write_json(out / "scan.json", {"schema": "hybridopt.lr_scan/1", "diverge_factor": a.diverge_factor,
                                           "probes": rows})
    except ValueError as e:
        print(f"hybridopt lr-scan: error: {e}", file=sys.stderr)
        return 2
    stable = [r for r in rows if r["status"] == "stable"]
    print(table(rows))
    print("\nlargest stable lr_x: " + (f"{_fmt_lr(max(r['lr_x'] for r in stable))} (over "
                                        f"{max(r['steps_run'] for r in stable)} steps)" if stable
                                        else "none of those probed"))
    return 1 if any(r["status"].startswith("failed") for r in rows) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
