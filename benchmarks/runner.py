"""One fine-tuning run on the shared optimizer core, with checkpoints, resume and a result file.

Protocol: train on the train split with random reshuffling; evaluate the task's dev metric
(accuracy, or the target loss of an SFT task) every ``eval_every`` steps (and at steps 0 and
``steps``); select the checkpoint with the best dev metric (earliest on ties); compute the test
metric **once**, on that checkpoint.  ``metrics.jsonl`` gets one line per step and per evaluation
while the run goes; ``selected.pt`` keeps the selected checkpoint (its FO block and the ZO log up
to it), from which ``hybridopt export`` rebuilds the fine-tuned model.

Checkpoints are small for the ZO block: they hold its log of (seed, coefficients) instead of
its weights; on resume (and to restore the selected checkpoint) the ZO block is rebuilt from
the freshly loaded initial model by replaying the log, which is bit-exact (same function,
same order).  The FO block (adapter, or all weights for fo-full) and its optimizer state, the
sampler state and the run history are stored as they are.  Every file is written atomically.
"""
from __future__ import annotations

import json
import math
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import hybridopt as ho
from hybridopt.io import _jsonable, torch_save, write_json

from .config import ConfigError, FinetuneConfig

CHECKPOINT = "checkpoint.pt"
RESULT = "result.json"
SELECTED = "selected.pt"
METRICS = "metrics.jsonl"
MODEL_DIR = "model"
CHECKPOINT_FORMAT = 2  # 2: ZO log entries (step, seed, gamma, lr, decay) and the ZO rule state


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
    losses: list[float] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    fo_grad_sq: list[float] = field(default_factory=list)
    zo_grad_sq_est: list[float] = field(default_factory=list)
    zo_curvature: list[float] = field(default_factory=list)
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

    def state(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ---- building ---------------------------------------------------------------------------------

def build_model(cfg: FinetuneConfig, progress: bool = False):
    """Model (+ peft adapter for the PEFT methods) and the method's (ZO, FO) blocks.
    Deterministic: the adapter is initialised from ``cfg.seed``, so a rebuild is identical."""
    from hybridopt.llm import attach_peft, load_model, parameter_blocks

    model, tok = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, progress=progress)
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
          progress: bool = False) -> Setup:
    from .scoring import encode_split, make_loss_fn

    examples = examples if examples is not None else load_examples(cfg)
    model, tok, zo, fo = build_model(cfg, progress=progress)
    train, dev, test = (encode_split(tok, examples[k], max_length=cfg.max_length) for k in ("train", "dev", "test"))
    problem = ho.ModuleProblem(model, make_loss_fn(train), zo, fo, n=len(train))
    optimizer = ho.HybridOptimizer(problem, cfg.hybrid_config(), comm=comm)
    sampler = ho.RandomReshuffling(len(train), cfg.batch_size, seed=cfg.seed)
    return Setup(comm, model, tok, problem, optimizer, sampler, train, dev, test)


def initial_zo_block(cfg: FinetuneConfig) -> list[torch.Tensor]:
    """The ZO block as loaded (before any step), from a fresh deterministic build."""
    _, _, zo, _ = build_model(cfg)
    return [p.detach() for p in zo]


@torch.no_grad()
def rebuild_zo_block(cfg: FinetuneConfig, log: list[ho.ZOLogEntry], upto: int) -> list[torch.Tensor]:
    """ZO block after the first ``upto`` steps: initial weights + replay of the log."""
    params = initial_zo_block(cfg)
    hc = cfg.hybrid_config()
    ho.replay_zo_log(params, [e for e in log if e.step < upto], hc)
    return params


@torch.no_grad()
def verify_reconstruction(cfg: FinetuneConfig, s: Setup) -> bool:
    """Rebuild the ZO block from the initial model + log and compare bit for bit with the live one."""
    rebuilt = rebuild_zo_block(cfg, s.optimizer.zo_log, s.optimizer.step_count)
    return all(torch.equal(a, b) for a, b in zip(rebuilt, s.problem.zo_params))


# ---- checkpoints -------------------------------------------------------------------------------

def save_checkpoint(out: Path, cfg: FinetuneConfig, s: Setup, hist: History) -> None:
    state = {"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "step": s.optimizer.step_count,
             "optimizer": s.optimizer.state_dict(), "sampler": s.sampler.state_dict(),
             "fo_params": [p.detach().cpu().clone() for p in s.problem.fo_params],
             "history": hist.state()}
    torch_save(out / CHECKPOINT, state)


@torch.no_grad()
def load_checkpoint(out: Path, cfg: FinetuneConfig, s: Setup) -> History:
    path = out / CHECKPOINT
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is one clear error
        raise RunError(f"cannot read checkpoint {path}: {e}") from None
    if state.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{path}: unknown checkpoint format {state.get('format')!r}")
    if state["config"] != cfg.to_dict():
        diff = sorted(k for k in state["config"] if state["config"][k] != cfg.to_dict().get(k))
        raise ConfigError(f"--resume with a different configuration than the checkpoint's (differs in: "
                          f"{', '.join(diff)})")
    s.optimizer.load_state_dict(state["optimizer"])
    s.sampler.load_state_dict(state["sampler"])
    for p, v in zip(s.problem.fo_params, state["fo_params"]):
        p.copy_(v.to(p.device))
    if s.problem.zo_params:
        rebuilt = rebuild_zo_block(cfg, s.optimizer.zo_log, state["step"])
        for p, v in zip(s.problem.zo_params, rebuilt):
            p.copy_(v)
    hist = History()
    hist.__dict__.update(state["history"])
    return hist


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
    """Refuse to clobber a finished run or silently restart an unfinished one."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} exists and is not a directory")
    finished, unfinished = (out / RESULT).exists(), (out / CHECKPOINT).exists()
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


def _selected_state(cfg: FinetuneConfig, s: Setup, hist: History) -> dict[str, Any]:
    """What ``selected.pt`` holds: the selected step's FO block and the ZO log up to it."""
    return {"config": cfg.to_dict(), "best_step": hist.best_step, "fo_params": hist.best_fo,
            "zo_log": [e.to_tuple() for e in s.optimizer.zo_log if e.step < hist.best_step]}


def _status(progress: bool, message: str) -> None:
    if progress:
        print(f"hybridopt: {message}", file=sys.stderr, flush=True)


def run(cfg: FinetuneConfig, out: str | Path, resume: bool = False, overwrite: bool = False,
        progress: bool = True, verify: bool = False, test: bool = True, save_model: bool = False,
        merge: bool = False) -> dict[str, Any]:
    """Run (or resume) one fine-tuning run; write ``out/result.json``; return the result.

    ``test=False`` (grid trials): no test evaluation; the selected checkpoint is saved
    (``selected.pt``) for :func:`evaluate_selected`.  ``save_model``: also write the selected
    model as a Hugging Face directory ``out/model`` (``merge``: adapter merged into the weights;
    see :mod:`benchmarks.export`)."""
    from hybridopt.distributed import init_from_env

    out = Path(out)
    check_out_dir(out, resume, overwrite)
    t_start = time.time()
    task = cfg.load_task()
    examples = load_examples(cfg)
    comm = init_from_env(cfg.device)
    lead = comm is None or comm.rank == 0  # only rank 0 writes files and shows progress
    show = progress and lead
    s = setup(cfg, examples, comm, progress=show)
    if overwrite and not resume and lead:
        for name in (RESULT, CHECKPOINT, SELECTED):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / MODEL_DIR, ignore_errors=True)
    hist = load_checkpoint(out, cfg, s) if resume else History()
    if not resume and not task.higher_is_better:
        hist.best_acc = math.inf          # the best metric so far (a loss here: lower is better)
    if lead:
        out.mkdir(parents=True, exist_ok=True)
    metrics = MetricsLog(out / METRICS if lead else None)
    metrics.start(s.optimizer.step_count if resume else None)
    better = (lambda a, b: a > b) if task.higher_is_better else (lambda a, b: a < b)

    def snapshot_best(value: float, step: int) -> None:
        hist.dev_curve.append([step, value])
        if better(value, hist.best_acc):
            hist.best_acc, hist.best_step = value, step
            hist.best_fo = [p.detach().cpu().clone() for p in s.problem.fo_params]

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
            checkpointing = bool(cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
            scalars = [stats.loss] + ([stats.fo_grad_sq] if stats.fo_grad_sq is not None else [])
            if not all(torch.isfinite(v).all() for v in scalars) or (
                    (evaluating or checkpointing or signals.received)
                    and not all(torch.isfinite(p).all() for p in s.problem.fo_params)):
                raise NonFiniteError(
                    f"non-finite training loss or weights at step {step}; stopped. The last good checkpoint "
                    f"(if any) is kept in {out / CHECKPOINT}; lower the learning rates or mu")
            hist.losses.append(loss)
            hist.epochs.append(s.sampler.batch_epoch)
            hist.zo_passes.append(stats.zo_passes)
            hist.zo_draws.append(stats.zo_draws)
            hist.zo_writes.append(stats.zo_writes)
            hist.zo_evals += stats.zo_evals
            hist.fo_grads += stats.fo_grads
            hist.train_tokens += s.problem.loss_fn.encoded.subset(batch).num_tokens()
            if stats.fo_grad_sq is not None:
                hist.fo_grad_sq.append(float(stats.fo_grad_sq))
            if stats.projected is not None:
                hist.zo_grad_sq_est.append(float(stats.projected.pow(2).mean()))
            if stats.curvature is not None:
                hist.zo_curvature.append(float(stats.curvature.mean()))
            metrics.write(event="step", step=step, epoch=s.sampler.batch_epoch, loss=loss, lr_x=stats.lr_x,
                          lr_y=stats.lr_y, seconds=hist.step_seconds[-1],
                          fo_grad_sq=hist.fo_grad_sq[-1] if stats.fo_grad_sq is not None else None,
                          zo_grad_sq_est=hist.zo_grad_sq_est[-1] if stats.projected is not None else None)
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
            if lead and ((cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or signals.received):
                save_checkpoint(out, cfg, s, hist)
            if signals.received:
                if bar is not None:
                    bar.close()
                metrics.close()
                raise Interrupted(f"interrupted by signal {signals.received} after step {step}; "
                                  f"checkpoint saved, continue with --resume", signals.received)
    if bar is not None:
        bar.close()
    s.optimizer.close()  # apply the pending ZO update and remove the hooks: the weights are read directly now
    if verify and s.problem.zo_params and not verify_reconstruction(cfg, s):
        raise RunError("the ZO block rebuilt from the initial model + ZO log differs from the live weights")

    if lead and cfg.checkpoint_every:
        save_checkpoint(out, cfg, s, hist)  # final state, so a finished run can be inspected
    if lead:
        torch_save(out / SELECTED, _selected_state(cfg, s, hist))
    if not test:
        result = _result(cfg, s, hist, None, time.time() - t_start)
        if lead:
            write_json(out / RESULT, result)
        metrics.close()
        return result

    # Select the best dev checkpoint, then test once.
    with torch.no_grad():
        if hist.best_step != s.optimizer.step_count:
            for p, v in zip(s.problem.fo_params, hist.best_fo):
                p.copy_(v.to(p.device))
            if s.problem.zo_params:
                for p, v in zip(s.problem.zo_params, rebuild_zo_block(cfg, s.optimizer.zo_log, hist.best_step)):
                    p.copy_(v)
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
    if lead:
        write_json(out / RESULT, result)
    return result


def export_meta(cfg: FinetuneConfig, step: int, run_dir: Path) -> dict[str, Any]:
    """What an exported model records about its run (``hybridopt.json`` beside the weights)."""
    return {"run_dir": str(Path(run_dir).resolve()), "task": cfg.load_task().name, "method": cfg.method,
            "model": cfg.model, "step": step, "config": cfg.to_dict(), "git_commit": _git_commit(),
            "hybridopt": ho.__version__}


@torch.no_grad()
def restore_selected(run_dir: str | Path, cfg: FinetuneConfig | None = None, progress: bool = False) -> tuple[FinetuneConfig, Setup, int]:
    """The selected checkpoint of a finished run (``selected.pt``), rebuilt bit-exactly: fresh
    model, FO block copied, ZO block = initial weights + replay of the stored log.  Returns
    ``(config, setup, selected step)``; ``cfg``, when given, must be the run's configuration."""
    path = Path(run_dir) / SELECTED
    if not path.is_file():
        raise ConfigError(f"{str(run_dir)!r} holds no selected checkpoint ({SELECTED}): not a finished run")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one clear error
        raise RunError(f"cannot read {path}: {e}") from None
    if cfg is None:
        from .config import validate
        cfg = validate(FinetuneConfig(**state["config"]))
    elif state["config"] != cfg.to_dict():
        raise ConfigError(f"{path} was made with another configuration")
    s = setup(cfg, progress=progress)
    for p, v in zip(s.problem.fo_params, state["fo_params"]):
        p.copy_(v.to(p.device))
    ho.replay_zo_log(s.problem.zo_params, [ho.ZOLogEntry.from_tuple(e) for e in state["zo_log"]], cfg.hybrid_config())
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


def _result(cfg: FinetuneConfig, s: Setup, hist: History, test_acc: float, wall: float) -> dict[str, Any]:
    import peft
    import transformers

    sps = statistics.median(hist.step_seconds) if hist.step_seconds else None
    train_time = sum(hist.step_seconds)
    task = cfg.load_task()
    acc = task.metric == "accuracy"
    return {
        "task": task.name, "method": cfg.method, "model": cfg.model, "steps": cfg.steps,
        "metric": task.metric,
        "dev_metric": {"name": task.metric, "best": hist.best_acc, "step": hist.best_step,
                       "higher_is_better": task.higher_is_better},
        "test_metric": test_acc,
        "dev_accuracy": {"best": hist.best_acc, "step": hist.best_step} if acc else None,
        "test_accuracy": test_acc if acc else None,
        "zero_shot_dev_accuracy": (hist.dev_curve[0][1] if hist.dev_curve else None) if acc else None,
        "train_loss_curve": [[i + 1, l] for i, l in enumerate(hist.losses)],
        "dev_curve": hist.dev_curve,
        "seconds_per_step": sps,
        "peak_memory_bytes": _peak_memory_bytes(cfg.device),
        "tokens_per_second": hist.train_tokens / train_time if train_time > 0 else None,
        "stationarity": {"epoch": hist.epochs, "fo_grad_sq": hist.fo_grad_sq,
                         "zo_grad_sq_est": hist.zo_grad_sq_est, "zo_curvature": hist.zo_curvature,
                         "zo_dim": sum(p.numel() for p in s.problem.zo_params),
                         "mu": cfg.hybrid_config().mu},
        "oracle_calls": {"zo_evals": hist.zo_evals, "fo_grads": hist.fo_grads,
                         **_sweep_counts(hist)},
        "sizes": {"train": len(s.train), "dev": len(s.dev), "test": len(s.test),
                  "steps_per_epoch": s.sampler.steps_per_epoch,
                  "zo_params": sum(p.numel() for p in s.problem.zo_params),
                  "fo_params": sum(p.numel() for p in s.problem.fo_params)},
        "communication": _communication(s),
        "seeds": {"seed": cfg.seed, "sampler": cfg.seed, "zo_directions": cfg.hybrid_config().seed,
                  "adapter_init": cfg.seed},
        "timing": {"wall_seconds": wall, "train_seconds": train_time, "eval_seconds": hist.eval_seconds},
        "config": {**cfg.to_dict(), "optimizer": cfg.hybrid_config().to_dict()},
        "git_commit": _git_commit(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "hybridopt": ho.__version__},
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "cpu_threads": torch.get_num_threads(),
                    "device": cfg.device if not cfg.device.startswith("cuda") else torch.cuda.get_device_name()},
    }
