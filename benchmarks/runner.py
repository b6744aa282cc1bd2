"""One fine-tuning run on the shared optimizer core, with checkpoints, resume and a result file.

Protocol: train on the train split with random reshuffling; evaluate the task's dev metric
(accuracy, or the target loss of an SFT task) every ``eval_every`` steps (and at steps 0 and
``steps``); select the checkpoint with the best dev metric (earliest on ties); compute the test
metric **once**, on that checkpoint.  ``metrics.jsonl`` gets one line per step and per evaluation
while the run goes; ``selected.pt`` keeps the selected checkpoint, from which ``hybridopt export``
rebuilds the fine-tuned model.

Checkpoints, ZO snapshots and ``selected.pt`` (:mod:`benchmarks.checkpoints`): a checkpoint holds
the FO block (adapter, or all weights for fo-full) and its optimizer state, the sampler state,
the run history and the ZO log since the last snapshot of the ZO block; resuming and restoring
the selected checkpoint rebuild the ZO block in the live model from that snapshot (or the
initial weights on disk) by replaying at most ``snapshot_every - 1`` steps, bit-exactly.  The
last two checkpoints are kept, checksummed; one process at a time works in a run directory (a
lock file).  Every file is written atomically.

Before any model is loaded: the output directory is checked (writable, not below a file, not in
use), the checkpoint to resume from is chosen and verified, and the prompts are tokenised and
checked against ``max_length``.  During the run, a model that collapses (the loss of a uniform
prediction with zero gradients for :data:`COLLAPSE_STEPS` steps) is reported.
"""
from __future__ import annotations

import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

import hybridopt as ho
from hybridopt.io import LockedError, RunLock, _jsonable, write_json, write_problem

from .checkpoints import (CHECKPOINT, CHECKPOINT_FORMAT, PREVIOUS, SELECTED, SNAPSHOTS, Keeper, Policy,  # noqa: F401
                          choose_checkpoint, has_checkpoint, read_selected, write_selected)
from . import schema
from .config import ConfigError, FinetuneConfig, check_device

RESULT = "result.json"
METRICS = "metrics.jsonl"
MODEL_DIR = "model"
#: consecutive steps at the uniform-prediction loss with zero gradients that make a collapse
COLLAPSE_STEPS = 5


class RunError(RuntimeError):
    """A run that cannot go on; ``exit_code`` tells the CLI what to return."""

    exit_code = 1


class NonFiniteError(RunError):
    exit_code = 3


class Interrupted(RunError):
    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


@dataclass
class Setup:
    comm: Any
    model: torch.nn.Module
    tokenizer: Any
    problem: ho.ModuleProblem
    optimizer: ho.HybridOptimizer
    sampler: ho.RandomReshuffling
    train: Any
    dev: Any
    test: Any


@dataclass
class History:
    """What a run has recorded so far (checkpointed with it).  The per-step stationarity proxies and
    predicted changes are the result schema's own records, filled step by step."""

    losses: list[float] = field(default_factory=list)
    stationarity: schema.Stationarity = field(default_factory=schema.Stationarity)
    changes: schema.Changes = field(default_factory=schema.Changes)
    zo_passes: list[float] = field(default_factory=list)
    zo_draws: list[float] = field(default_factory=list)
    zo_writes: list[float] = field(default_factory=list)
    zo_evals: int = 0
    fo_grads: int = 0
    dev_curve: list[list[float]] = field(default_factory=list)
    best_acc: float = -1.0
    best_step: int = 0
    best_fo: list[torch.Tensor] | None = None
    step_seconds: list[float] = field(default_factory=list)
    eval_seconds: float = 0.0
    train_tokens: int = 0
    # the selected step's ZO block = snapshot best_zo_base + these ZO log entries (benchmarks.checkpoints)
    best_zo_base: int = 0
    best_zo_log: list[tuple] = field(default_factory=list)
    # consecutive steps at the uniform-prediction loss with zero gradients; the collapse, once seen
    flat_steps: int = 0
    collapse: dict[str, Any] | None = None

    #: flat keys of checkpoints written before the history held the schema's records
    _FLAT = {"epochs": ("stationarity", "epoch"), "fo_grad_sq": ("stationarity", "fo_grad_sq"),
             "zo_grad_sq_est": ("stationarity", "zo_grad_sq_est"), "zo_curvature": ("stationarity", "zo_curvature"),
             "zo_change": ("changes", "zo_first"), "zo_change_quad": ("changes", "zo_second"),
             "fo_change": ("changes", "fo_first")}

    def state(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["stationarity"], d["changes"] = asdict(self.stationarity), asdict(self.changes)
        return d

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "History":
        """The inverse of :meth:`state` (also reads the flat lists of older checkpoints)."""
        d = dict(state)
        nested = {"stationarity": dict(d.pop("stationarity", {})), "changes": dict(d.pop("changes", {}))}
        for old, (group, key) in cls._FLAT.items():
            if old in d:
                nested[group][key] = d.pop(old)
        return cls(**d, stationarity=schema.Stationarity(**nested["stationarity"]),
                   changes=schema.Changes(**nested["changes"]))


# ---- building ---------------------------------------------------------------------------------

def build_model(cfg: FinetuneConfig, progress: bool = False, tokenizer=None):
    """Model (+ peft adapter for the PEFT methods) and the method's (ZO, FO) blocks.
    Deterministic: the adapter is initialised from ``cfg.seed``, so a rebuild is identical.
    ``tokenizer``: the model's, already loaded (to check the prompts before the model): not loaded twice."""
    from hybridopt.llm import attach_peft, load_model, parameter_blocks

    model, tok = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, progress=progress, tokenizer=tokenizer)
    if cfg.uses_peft:
        p = cfg.peft
        model = attach_peft(model, kind=p.get("kind", "lora"), r=p.get("r", 8), alpha=p.get("alpha", 16),
                            target_modules=p.get("target_modules"),
                            num_virtual_tokens=p.get("num_virtual_tokens", 5),
                            config_path=p.get("config_path") if p.get("kind") == "config" else None,
                            seed=cfg.seed)
    base, adapter = parameter_blocks(model)
    zo, fo = ho.split_blocks(cfg.method, base, adapter)
    return model, tok, zo, fo


def load_examples(cfg: FinetuneConfig) -> dict[str, list]:
    """Read and validate the three splits (before any model is loaded): every bad record of every
    file is reported, one line each.  A task without a test split gets an empty one."""
    from .tasks import load_splits

    out = load_splits(cfg.task, cfg.data_dir, {"train": cfg.n_train, "dev": cfg.n_dev, "test": cfg.n_test})
    if cfg.batch_size > len(out["train"]):
        raise ConfigError(f"batch_size={cfg.batch_size} exceeds the {len(out['train'])} training examples")
    return out


def setup(cfg: FinetuneConfig, examples: dict[str, list] | None = None, comm=None,
          progress: bool = False, track_changes: bool | None = None, encoded: tuple | None = None) -> Setup:
    """``track_changes``: record the FO update's predicted change (``StepStats.fo_change``, one copy
    of the FO block per step); None = when the FO block is the adapter (cheap), not for fo-full."""
    from .scoring import make_loss_fn

    examples = examples if examples is not None else load_examples(cfg)
    # encoded: (tokenizer, (train, dev, test)) from encode_splits, made before the model was loaded
    model, tok, zo, fo = build_model(cfg, progress=progress, tokenizer=encoded[0] if encoded is not None else None)
    if encoded is not None:
        train, dev, test = encoded[1]
    else:
        train, dev, test = encode_splits(cfg, tok, examples)
    problem = ho.ModuleProblem(model, make_loss_fn(train), zo, fo, n=len(train))
    if track_changes is None:
        track_changes = ho.methods.get(cfg.method).fo == ("adapter",)
    optimizer = ho.HybridOptimizer(problem, cfg.hybrid_config(), comm=comm, track_changes=track_changes)
    sampler = ho.RandomReshuffling(len(train), cfg.batch_size, seed=cfg.seed)
    return Setup(comm, model, tok, problem, optimizer, sampler, train, dev, test)


SPLITS = ("train", "dev", "test")


def encode_splits(cfg: FinetuneConfig, tok, examples: dict[str, list], warn=None) -> tuple:
    """The three splits tokenised under the prompt-length rule (:func:`scoring.encode_fitting`) for
    ``cfg.max_length`` / ``cfg.truncate_prompts``; a violation is a :class:`ConfigError` (one line)."""
    from .scoring import PromptLengthError, encode_fitting

    try:
        enc = encode_fitting(tok, {k: examples[k] for k in SPLITS}, cfg.max_length, cfg.truncate_prompts, warn)
    except PromptLengthError as e:
        raise ConfigError(str(e)) from None
    return tuple(enc[k] for k in SPLITS)


# ---- the run -------------------------------------------------------------------------------------

def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _peak_memory_bytes(device: str) -> int:
    if device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def check_out_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a finished run or silently restart an unfinished one, and an ``out``
    where no file can be written (below a file, a read-only or pseudo file system)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} exists and is not a directory")
    problem = write_problem(out)
    if problem:
        raise ConfigError(f"--out {str(out)!r}: {problem}")
    finished, unfinished = (out / RESULT).exists(), has_checkpoint(out)
    if resume:
        if not unfinished:
            raise ConfigError(f"--resume: {str(out)!r} holds no checkpoint to resume from")
        if finished and not overwrite:
            raise ConfigError(f"{str(out)!r} already holds a finished run (result.json); nothing to resume")
        return
    if finished and not overwrite:
        raise ConfigError(f"{str(out)!r} already holds a finished run (result.json); pass --overwrite to replace it")
    if unfinished and not overwrite:
        raise ConfigError(f"{str(out)!r} holds an unfinished run (checkpoint.pt); pass --resume to continue it "
                          "or --overwrite to start again")


class _Signals:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint after the current step and stops."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _evaluate(s: Setup, cfg: FinetuneConfig, split, progress: str | None = None) -> float:
    """The split's metric (accuracy, or the SFT target loss); with several ranks each scores a
    strided shard and the per-example sums are added up."""
    from .scoring import evaluate

    if s.comm is None:
        return float(evaluate(s.model, split, batch_size=cfg.eval_batch_size, progress=progress))
    idx = list(range(s.comm.rank, len(split), s.comm.world_size))
    part = float(evaluate(s.model, split.subset(idx), batch_size=cfg.eval_batch_size)) * len(idx) if idx else 0.0
    total = torch.tensor([part], dtype=torch.float64, device=s.comm.device)
    return float(s.comm.sum_(total, "eval").item()) / len(split)


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, appended and flushed as the run goes (``tail -f``
    follows it): ``{"event": "step", ...}`` after every step, ``{"event": "eval", ...}`` after every
    dev evaluation, ``{"event": "test", ...}`` at the end.  A resumed run first cuts the file back
    to its checkpoint's step (a crash may have left later lines), so it ends up as an uninterrupted
    run's file (timings aside).  Only the writing rank keeps one."""

    def __init__(self, path: Path | None) -> None:
        self.path, self._fh = path, None

    def start(self, resume_step: int | None) -> None:
        if self.path is None:
            return
        from hybridopt.io import write_text

        kept = []
        if resume_step is not None and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line torn by a crash
                    continue
                if rec.get("event") in ("step", "eval") and rec.get("step", 0) <= resume_step:
                    kept.append(line + "\n")
        write_text(self.path, "".join(kept))
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, **record: Any) -> None:
        if self._fh is not None:
            self._fh.write(json.dumps(_jsonable(record), allow_nan=False) + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _status(progress: bool, message: str) -> None:
    if progress:
        print(f"hybridopt: {message}", file=sys.stderr, flush=True)


def _uniform_loss(s: Setup) -> tuple[float, str] | None:
    """The training loss of a model that predicts uniformly, and how it reads: ln(candidates) for a
    classification task, ln(vocabulary size) for the target tokens of an SFT task."""
    c = s.train.num_candidates
    if c > 1:
        return math.log(c), f"ln {c}, a uniform choice among the {c} candidates"
    v = getattr(getattr(s.model, "config", None), "vocab_size", None)
    return (math.log(v), f"ln {v}, a uniform prediction over the vocabulary") if v else None


def _watch_collapse(hist: History, stats: ho.StepStats, uniform: tuple[float, str] | None, step: int, warn) -> None:
    """A collapse: the uniform-prediction loss and zero gradients (of every block: ‖∇_y f_B‖², the
    projected ZO gradients) for :data:`COLLAPSE_STEPS` steps in a row; flagged once."""
    grads = [g for g in (stats.fo_grad_sq, stats.projected) if g is not None]
    flat = (uniform is not None and bool(grads) and all(float(g.abs().max()) == 0.0 for g in grads)
            and abs(float(stats.loss) - uniform[0]) <= 1e-6 * max(1.0, uniform[0]))
    hist.flat_steps = hist.flat_steps + 1 if flat else 0
    if hist.flat_steps == COLLAPSE_STEPS and hist.collapse is None:
        first = step - COLLAPSE_STEPS + 1
        hist.collapse = {"step": first, "steps": COLLAPSE_STEPS, "loss": float(stats.loss), "uniform_loss": uniform[0]}
        warn(f"the model collapsed at step {first}: the training loss is {float(stats.loss):.6g} ({uniform[1]}) and "
             f"every gradient is zero for {COLLAPSE_STEPS} steps; lower the learning rates")


@dataclass
class _Prepared:
    """What :func:`run` checked and read before loading the model."""

    t_start: float
    examples: dict[str, list]
    encoded: tuple
    chosen: dict[str, Any] | None
    warnings: list[str]
    warn: Any


def run(cfg: FinetuneConfig, out: str | Path, resume: bool = False, overwrite: bool = False,
        progress: bool = True, verify: bool = False, test: bool = True, save_model: bool = False,
        merge: bool = False, policy: Policy | None = None) -> dict[str, Any]:
    """Run (or resume) one fine-tuning run; write ``out/result.json``; return the result.

    ``test=False`` (grid trials): no test evaluation; the selected checkpoint is saved
    (``selected.pt``) for :func:`evaluate_selected`.  ``save_model``: also write the selected
    model as a Hugging Face directory ``out/model`` (``merge``: adapter merged into the weights;
    see :mod:`benchmarks.export`).  ``policy``: when checkpoints and ZO snapshots are written
    (:class:`~benchmarks.checkpoints.Policy`; its ``checkpoint_every`` is ``cfg.checkpoint_every``).

    Everything that needs no model is done first, so that bad input costs no loading: the
    output directory (writable, finished or not), the data, the prompts against ``max_length``
    (with the tokenizer only), the directory's lock (another process working there is refused)
    and the checkpoint to resume from (checksums and snapshots verified)."""
    import dataclasses

    from hybridopt.distributed import world_from_env
    from hybridopt.llm.models import check_model_source, load_tokenizer

    out = Path(out)
    check_out_dir(out, resume, overwrite)
    policy = dataclasses.replace(policy or Policy(), checkpoint_every=cfg.checkpoint_every)
    lead = world_from_env()[0] == 0
    warnings: list[str] = []
    shown = {"live": False, "count": 0}   # warnings wait until the input is known good (bad input: one line)

    def show_warnings() -> None:
        for message in warnings[shown["count"]:] if lead else ():
            print(f"hybridopt: warning: {message}", file=sys.stderr, flush=True)
        shown["count"] = len(warnings)

    def warn(message: str) -> None:
        warnings.append(message)
        if shown["live"]:
            show_warnings()

    t_start = time.time()
    examples = load_examples(cfg)
    check_device(cfg.device)
    try:
        check_model_source(cfg.model)     # a Hugging Face id must be in the local cache (or downloads allowed)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        tok = load_tokenizer(cfg.model)
    except (OSError, RuntimeError) as e:
        raise ConfigError(f"cannot load the tokenizer of {cfg.model!r}: {str(e).splitlines()[0]}") from None
    encoded = (tok, encode_splits(cfg, tok, examples, warn))
    lock = None
    if lead:
        try:
            lock = RunLock(out).acquire()
        except LockedError as e:
            raise ConfigError(str(e)) from None
        if lock.stale and lock.stale.get("pid") != os.getpid():
            warn(f"took over the lock of process {lock.stale.get('pid')}, which is no longer running")
    try:
        chosen = choose_checkpoint(out, cfg, warn) if resume else None
        shown["live"] = True
        show_warnings()
        return _run(cfg, out, resume, overwrite, progress, verify, test, save_model, merge, policy,
                    _Prepared(t_start, examples, encoded, chosen, warnings, warn))
    finally:
        if lock is not None:
            lock.release()


def _run(cfg: FinetuneConfig, out: Path, resume: bool, overwrite: bool, progress: bool, verify: bool, test: bool,
         save_model: bool, merge: bool, policy: Policy, prep: _Prepared) -> dict[str, Any]:
    """The run itself, once :func:`run` has checked its input and holds the directory's lock."""
    from hybridopt.distributed import init_from_env

    t_start, examples, warn = prep.t_start, prep.examples, prep.warn
    task = cfg.load_task()
    comm = init_from_env(cfg.device)
    lead = comm is None or comm.rank == 0  # only rank 0 writes files and shows progress
    show = progress and lead
    s = setup(cfg, examples, comm, progress=show, encoded=prep.encoded)
    if overwrite and not resume and lead:
        for name in (RESULT, CHECKPOINT, PREVIOUS, f"{CHECKPOINT}.damaged", SELECTED):
            (out / name).unlink(missing_ok=True)
        for folder in (MODEL_DIR, SNAPSHOTS):
            shutil.rmtree(out / folder, ignore_errors=True)
    if lead:
        out.mkdir(parents=True, exist_ok=True)
    keeper = Keeper(out, cfg, s, policy, lead, warn)
    hist = History()
    if resume:
        hist = History.from_state(keeper.resume(prep.chosen))
    else:
        keeper.start()
        if not task.higher_is_better:
            hist.best_acc = math.inf      # the best metric so far (a loss here: lower is better)
    uniform = _uniform_loss(s)
    metrics = MetricsLog(out / METRICS if lead else None)
    metrics.start(s.optimizer.step_count if resume else None)
    better = (lambda a, b: a > b) if task.higher_is_better else (lambda a, b: a < b)

    def snapshot_best(value: float, step: int) -> None:
        hist.dev_curve.append([step, value])
        if better(value, hist.best_acc):
            hist.best_acc, hist.best_step = value, step
            hist.best_fo = [p.detach().cpu().clone() for p in s.problem.fo_params]
            hist.best_zo_base = keeper.base
            hist.best_zo_log = [e.to_tuple() for e in s.optimizer.zo_log if keeper.base <= e.step < step]

    def timed_eval(step: int, label: str | None = None) -> None:
        t0 = time.perf_counter()
        value = _evaluate(s, cfg, s.dev, progress=label if show else None)
        snapshot_best(value, step)
        hist.eval_seconds += time.perf_counter() - t0
        metrics.write(event="eval", step=step, split="dev", metric=task.metric, value=value,
                      best=hist.best_acc, best_step=hist.best_step, seconds=time.perf_counter() - t0)

    if not hist.dev_curve:
        timed_eval(0, f"zero-shot dev {task.metric} ({len(s.dev)} examples)")
    bar = None
    if show:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.steps, initial=s.optimizer.step_count, desc=f"{task.name}/{cfg.method}",
                   unit="step", dynamic_ncols=True)
    with _Signals() as signals:
        while s.optimizer.step_count < cfg.steps:
            t0 = time.perf_counter()
            batch = s.sampler.next_batch()
            stats = s.optimizer.step(batch)
            loss = float(stats.loss)
            hist.step_seconds.append(time.perf_counter() - t0)
            step = s.optimizer.step_count
            # Per step only scalars already computed are checked (loss, ||∇_y f_B||²); the weights
            # themselves (a full pass for fo-full) only before they are evaluated or checkpointed.
            evaluating = step % cfg.eval_every == 0 or step == cfg.steps
            checkpointing = keeper.checkpoint_due(step) or step % policy.snapshot_every == 0
            scalars = [stats.loss] + ([stats.fo_grad_sq] if stats.fo_grad_sq is not None else [])
            if not all(torch.isfinite(v).all() for v in scalars) or (
                    (evaluating or checkpointing or signals.received)
                    and not all(torch.isfinite(p).all() for p in s.problem.fo_params)):
                raise NonFiniteError(
                    f"non-finite training loss or weights at step {step}; stopped. The last good checkpoint "
                    f"(if any) is kept in {out / CHECKPOINT}; lower the learning rates or mu")
            hist.losses.append(loss)
            st = hist.stationarity
            st.epoch.append(s.sampler.batch_epoch)
            hist.zo_passes.append(stats.zo_passes)
            hist.zo_draws.append(stats.zo_draws)
            hist.zo_writes.append(stats.zo_writes)
            hist.zo_evals += stats.zo_evals
            hist.fo_grads += stats.fo_grads
            hist.train_tokens += s.problem.loss_fn.encoded.subset(batch).num_tokens()
            if stats.fo_grad_sq is not None:
                st.fo_grad_sq.append(float(stats.fo_grad_sq))
            if stats.projected is not None:
                st.zo_grad_sq_est.append(float(stats.projected.pow(2).mean()))
            if stats.curvature is not None:
                st.zo_curvature.append(float(stats.curvature.mean()))
            _record_changes(hist.changes, stats)
            metrics.write(event="step", step=step, epoch=s.sampler.batch_epoch, loss=loss, lr_x=stats.lr_x,
                          lr_y=stats.lr_y, seconds=hist.step_seconds[-1],
                          fo_grad_sq=st.fo_grad_sq[-1] if stats.fo_grad_sq is not None else None,
                          zo_grad_sq_est=st.zo_grad_sq_est[-1] if stats.projected is not None else None)
            _watch_collapse(hist, stats, uniform, step, warn)
            keeper.after_step(step)   # a ZO snapshot when one is due, before this step's evaluation
            if evaluating:
                if bar is not None:
                    bar.set_postfix_str(f"loss={loss:.4f}, dev=evaluating...")
                timed_eval(step)
            if bar is not None:
                bar.update(1)
                at, value = hist.dev_curve[-1]
                # the dev value is that of the last evaluation; between evaluations it says which step
                dev = f"dev={value:.3f}" if at == step else f"dev@{at}={value:.3f}"
                bar.set_postfix_str(f"loss={loss:.4f}, {dev}")
            if comm is not None:  # all ranks stop at the same step
                signals.received = comm.max_flag(signals.received or 0) or None
            saved = keeper.checkpoint(hist) if keeper.checkpoint_due(step) or (lead and signals.received) else None
            if signals.received:
                if bar is not None:
                    bar.close()
                metrics.close()
                said = "checkpoint saved" if saved or not lead else "the checkpoint could not be saved (see above)"
                raise Interrupted(f"interrupted by signal {signals.received} after step {step}; "
                                  f"{said}, continue with --resume", signals.received)
    if bar is not None:
        bar.close()
    s.optimizer.close()  # apply the pending ZO update and remove the hooks: the weights are read directly now
    if verify and s.problem.zo_params and not keeper.verify():
        raise RunError("the ZO block rebuilt from its snapshot (or the initial weights) + the ZO log differs from "
                       "the live weights")

    if lead and cfg.checkpoint_every:
        keeper.checkpoint(hist)  # final state, so a finished run can be inspected
    selected = keeper.selected_state(hist)
    if lead:
        _write_or_fail(out / SELECTED, lambda p: write_selected(out, selected))
    if comm is not None:
        comm.max_flag(0)          # every rank waits until selected.pt is on disk, then reads it
        selected = selected if lead else read_selected(out)
    if not test:
        result = _result(cfg, s, hist, None, time.time() - t_start)
        result["reliability"] = _reliability(hist, prep, keeper)
        if lead:
            _write_or_fail(out / RESULT, lambda p: write_json(p, result))
        metrics.close()
        keeper.finish(hist, keep_checkpoints=bool(cfg.checkpoint_every))
        return result

    # Select the best dev checkpoint (rebuilt in the live model, from its snapshot), then test once.
    if hist.best_step != s.optimizer.step_count:
        before = _peak_memory_bytes(cfg.device)
        done = keeper.restore(selected, fresh=False)
        keeper.report["selection"] = {"step": hist.best_step, **done, "peak_memory_before_bytes": before,
                                      "peak_memory_after_bytes": _peak_memory_bytes(cfg.device)}
    test_value = None
    if len(s.test):
        t0 = time.perf_counter()
        test_value = _evaluate(s, cfg, s.test, progress=f"test {task.metric} of step {hist.best_step} "
                                                        f"({len(s.test)} examples)" if show else None)
        metrics.write(event="test", step=hist.best_step, split="test", metric=task.metric, value=test_value,
                      seconds=time.perf_counter() - t0)
    metrics.close()
    exported = None
    if save_model and lead:
        from .export import VERIFY_EXAMPLES, check_export, dev_loss, export_model
        _status(show, f"writing the model of step {hist.best_step} to {out / MODEL_DIR} and reloading it to check it")
        enc = s.dev.subset(range(min(VERIFY_EXAMPLES, len(s.dev))))
        trained = dev_loss(s.model, enc, cfg.eval_batch_size)
        export_model(s.model, s.tokenizer, out / MODEL_DIR, merge=merge, overwrite=True,
                     meta={**export_meta(cfg, hist.best_step, out), "trained_dev_loss": trained})
        exported = {"dir": str(out / MODEL_DIR), "merged": merge,
                    **check_export(out / MODEL_DIR, enc, trained, merge, cfg.device, cfg.eval_batch_size)}
    result = _result(cfg, s, hist, test_value, time.time() - t_start)
    if exported is not None:
        result["export"] = exported
    result["reliability"] = _reliability(hist, prep, keeper)
    if lead:
        _write_or_fail(out / RESULT, lambda p: write_json(p, result))
    keeper.finish(hist, keep_checkpoints=bool(cfg.checkpoint_every))
    return result


def _reliability(hist: History, prep: _Prepared, keeper: Keeper) -> dict[str, Any]:
    """``result.json`` ``reliability``: the collapse flag, this process's warnings, and how the run
    was resumed and its selected step restored (snapshot, replayed steps, seconds, memory)."""
    return {"collapse": hist.collapse, "warnings": list(prep.warnings), **keeper.report}


def _write_or_fail(path: Path, write) -> None:
    """``write(path)``; a full disk or an I/O error (the previous file stays intact) becomes one line."""
    try:
        write(path)
    except OSError as e:
        out = path.parent
        then = ("the last checkpoint is kept: free space and continue with --resume" if has_checkpoint(out)
                else "free space and run it again")
        raise RunError(f"could not write {path} ({e.strerror or e}); {then}") from None


def export_meta(cfg: FinetuneConfig, step: int, run_dir: Path) -> dict[str, Any]:
    """What an exported model records about its run (``hybridopt.json`` beside the weights)."""
    return {"run_dir": str(Path(run_dir).resolve()), "task": cfg.load_task().name, "method": cfg.method,
            "model": cfg.model, "step": step, "config": cfg.to_dict(), "git_commit": _git_commit(),
            "hybridopt": ho.__version__}


@torch.no_grad()
def restore_selected(run_dir: str | Path, cfg: FinetuneConfig | None = None, progress: bool = False) -> tuple[FinetuneConfig, Setup, int]:
    """The selected checkpoint of a finished run (``selected.pt``), rebuilt bit-exactly in a freshly
    loaded model: the FO block copied, the ZO block = its snapshot (or the loaded initial weights)
    + the stored log.  ``selected.pt`` and the snapshot are verified before the model is loaded.
    Returns ``(config, setup, selected step)``; ``cfg``, when given, must be the run's configuration."""
    from hybridopt.io import DamagedFileError

    from .checkpoints import verify_snapshot

    run_dir = Path(run_dir)
    path = run_dir / SELECTED
    if not path.is_file():
        raise ConfigError(f"{str(run_dir)!r} holds no selected checkpoint ({SELECTED}): not a finished run")
    try:
        state = read_selected(run_dir)
        if state["zo_base"]:
            verify_snapshot(run_dir, state["zo_base"])
    except (DamagedFileError, FileNotFoundError) as e:
        raise ConfigError(f"{e} ({SELECTED} cannot be rebuilt; run the fine-tuning again)") from None
    if cfg is None:
        from .config import validate
        cfg = validate(FinetuneConfig(**state["config"]))
    elif state["config"] != cfg.to_dict():
        raise ConfigError(f"{path} was made with another configuration")
    s = setup(cfg, progress=progress)
    Keeper(run_dir, cfg, s, Policy(), lead=False, warn=lambda message: None).restore(state, fresh=True)
    s.optimizer.close()
    return cfg, s, int(state["best_step"])


def evaluate_selected(cfg: FinetuneConfig, run_dir: str | Path) -> float:
    """Test metric of a trial's selected checkpoint (``selected.pt``), rebuilt bit-exactly."""
    _, s, _ = restore_selected(run_dir, cfg)
    return _evaluate(s, cfg, s.test)


def _communication(s: Setup) -> dict[str, Any] | None:
    """Bytes all-reduced per step by each block, next to what data-parallel full FT would send."""
    if s.comm is None:
        return None
    per = s.comm.stats.per_step
    model_bytes = sum(p.numel() * p.element_size() for p in {id(p): p for p in s.model.parameters()}.values())
    return {"world_size": s.comm.world_size,
            "zo_bytes_per_step": statistics.median(z for z, _ in per) if per else 0,
            "fo_bytes_per_step": statistics.median(f for _, f in per) if per else 0,
            "full_ft_allreduce_bytes_per_step": model_bytes}


def _sweep_counts(hist: History) -> dict[str, float]:
    """Per step, in units of the ZO block's size: direction elements drawn, ZO weights written,
    ZO weights read or written by the ZO machinery (medians over the steps after the first,
    which has no update of a previous step to write)."""
    def med(xs):
        xs = xs[1:] if len(xs) > 1 else xs
        return statistics.median(xs) if xs else 0.0
    return {"zo_draws_per_step": med(hist.zo_draws), "zo_weight_writes_per_step": med(hist.zo_writes),
            "zo_weight_passes_per_step": med(hist.zo_passes)}


def _record_changes(changes: schema.Changes, stats: ho.StepStats) -> None:
    """The step's predicted change of f_B by block (:class:`benchmarks.schema.Changes`)."""
    if stats.zo_change is not None:
        changes.zo_first.append(float(stats.zo_change))
        if stats.curvature is not None:   # quadratic model along each direction, from the step's own probes
            g2c = (stats.projected.double().pow(2) * stats.curvature.double()).sum()
            q = stats.projected.shape[0]
            changes.zo_second.append(float(stats.zo_change) + 0.5 * (stats.lr_x / q) ** 2 * float(g2c))
    if stats.fo_change is not None:
        changes.fo_first.append(float(stats.fo_change))


def _result(cfg: FinetuneConfig, s: Setup, hist: History, test_acc: float, wall: float) -> dict[str, Any]:
    """The run's ``result.json`` (:class:`benchmarks.schema.RunResult`, as a dict)."""
    import peft
    import transformers

    sps = statistics.median(hist.step_seconds) if hist.step_seconds else None
    train_time = sum(hist.step_seconds)
    task = cfg.load_task()
    acc = task.metric == "accuracy"
    hc = cfg.hybrid_config()
    zo_dim = sum(p.numel() for p in s.problem.zo_params)
    return schema.RunResult(
        task=task.name, method=cfg.method, model=cfg.model, steps=cfg.steps, metric=task.metric,
        dev_metric=schema.DevMetric(task.metric, hist.best_acc, hist.best_step, task.higher_is_better),
        test_metric=test_acc,
        dev_accuracy=schema.BestAccuracy(hist.best_acc, hist.best_step) if acc else None,
        test_accuracy=test_acc if acc else None,
        zero_shot_dev_accuracy=(hist.dev_curve[0][1] if hist.dev_curve else None) if acc else None,
        train_loss_curve=[[i + 1, l] for i, l in enumerate(hist.losses)],
        dev_curve=hist.dev_curve,
        seconds_per_step=sps,
        step_seconds=list(hist.step_seconds),
        peak_memory_bytes=_peak_memory_bytes(cfg.device),
        tokens_per_second=hist.train_tokens / train_time if train_time > 0 else None,
        stationarity=replace(hist.stationarity, zo_dim=zo_dim, mu=hc.mu),
        changes=hist.changes,
        oracle_calls=schema.OracleCalls(hist.zo_evals, hist.fo_grads, **_sweep_counts(hist)),
        sizes=schema.Sizes(len(s.train), len(s.dev), len(s.test), s.sampler.steps_per_epoch, zo_dim,
                      sum(p.numel() for p in s.problem.fo_params)),
        communication=_communication(s),
        seeds=schema.Seeds(cfg.seed, cfg.seed, hc.seed, cfg.seed),
        timing=schema.Timing(wall, train_time, hist.eval_seconds),
        config={**cfg.to_dict(), "optimizer": hc.to_dict()},
        git_commit=_git_commit(),
        versions={"torch": torch.__version__, "transformers": transformers.__version__,
                  "peft": peft.__version__, "hybridopt": ho.__version__},
        machine=schema.Machine(platform.platform(), platform.machine(), torch.get_num_threads(),
                          cfg.device if not cfg.device.startswith("cuda") else torch.cuda.get_device_name()),
    ).to_dict()
