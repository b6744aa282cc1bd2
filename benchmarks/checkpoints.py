"""What a run directory keeps so that a run can be resumed and its selected step rebuilt, at a
cost that does not grow with the run, and that survives damaged files and full disks.

ZO block (the base weights for hybrid and zo-full).  A *snapshot*
``snapshots/zo-<step>.safetensors`` holds the ZO tensors and the ZO rule's state at a step (each
tensor with its SHA-256); one is taken every ``snapshot_every`` steps and at least every
``snapshot_minutes``.  A checkpoint holds only the ZO log since its snapshot, so resuming, and
restoring the selected step, load the nearest snapshot **into the live model** and replay at
most ``snapshot_every - 1`` logged updates: a snapshot = (x_s, rule state at s) plus the log
entries of steps >= s rebuilds any later step bit for bit (the same arithmetic as the live run,
:func:`hybridopt.replay_zo_log`).  Snapshot 0 (the initial ZO block) *refers* to the model's own
weight files for every tensor stored there unchanged (checked by digest) and holds the rest (a
model built in code, the adapter zo-peft trains), so the selected step is rebuilt after training
from the nearest snapshot or from the weights on disk — never from a second model in memory.
Only the snapshots still needed are kept (those of the two checkpoints, of the selected step,
and snapshot 0).

Checkpoints.  ``checkpoint.pt`` (latest) and ``checkpoint.prev.pt`` (the one before), each
written atomically with a checksum (:func:`hybridopt.io.save_checked`); the new one is complete
on disk before the old one becomes ``.prev``.  On resume a damaged checkpoint (or one whose
snapshot is damaged) is skipped for the previous one with a one-line warning; when neither is
usable the error says to start again with ``--overwrite``.  A failed write (``ENOSPC``, an I/O
error) leaves both files as they were; the run warns and goes on.  Checkpoints are taken every
``checkpoint_every`` steps, every ``checkpoint_minutes`` and with every snapshot.

``selected.pt``: the selected step's FO block, the step of its snapshot and the ZO log from
there (:func:`read_selected`), what ``hybridopt export`` rebuilds the fine-tuned model from.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

import hybridopt as ho
from hybridopt.io import (DamagedFileError, TensorFile, is_checked, load_checked, save_checked, save_tensors,
                          tensor_digest)

from .config import ConfigError

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
SELECTED = "selected.pt"
SNAPSHOTS = "snapshots"
#: 2: ZO log from step 0 and the ZO rule state; 3: the ZO log since the snapshot ``zo_base``
CHECKPOINT_FORMAT = 3
SNAPSHOT_FORMAT = "1"


@dataclass
class Policy:
    """When a run writes checkpoints and snapshots.  ``checkpoint_every`` (steps, 0: none by
    count) and ``checkpoint_minutes`` (0: none by time) bound what a killed run loses;
    ``snapshot_every`` (steps) bounds the replay of a resume or a restore (at most
    ``snapshot_every - 1`` steps) and ``snapshot_minutes`` its time."""

    checkpoint_every: int = 0
    checkpoint_minutes: float = 10.0
    snapshot_every: int = 100
    snapshot_minutes: float = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.snapshot_every, bool) or not isinstance(self.snapshot_every, int) or self.snapshot_every < 1:
            raise ConfigError(f"snapshot_every must be an integer >= 1, got {self.snapshot_every!r}")
        for name in ("checkpoint_minutes", "snapshot_minutes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or v == float("inf"):
                raise ConfigError(f"{name} must be a finite number >= 0, got {v!r}")


def snapshot_path(out: Path, step: int) -> Path:
    return Path(out) / SNAPSHOTS / f"zo-{step:08d}.safetensors"


def snapshot_steps(out: Path) -> list[int]:
    folder = Path(out) / SNAPSHOTS
    found = (re.fullmatch(r"zo-(\d+)\.safetensors", p.name) for p in folder.glob("zo-*.safetensors")) \
        if folder.is_dir() else ()
    return sorted(int(m.group(1)) for m in found if m)


def has_checkpoint(out: Path) -> bool:
    return any((Path(out) / n).exists() for n in (CHECKPOINT, PREVIOUS))


# ---- snapshots -----------------------------------------------------------------------------------

def _file_names(model: torch.nn.Module, params: list[torch.Tensor]) -> list[list[str]]:
    """For each ZO tensor, the names it has in the model's weight files (the plain model's names;
    a tied weight has several)."""
    from .export import base_state_dict

    by_ptr: dict[tuple, list[str]] = {}
    for name, t in base_state_dict(model).items():
        by_ptr.setdefault((t.data_ptr(), tuple(t.shape), t.dtype), []).append(name)
    return [by_ptr.get((p.data_ptr(), tuple(p.shape), p.dtype), []) for p in params]


def write_snapshot(out: Path, step: int, params: list[torch.Tensor], state: list[torch.Tensor],
                   refs: dict[int, tuple[str, str]] | None = None) -> Path:
    """``params`` (x at ``step``) and the ZO rule ``state`` into ``snapshots/zo-<step>``;
    ``refs[j] = (name, digest)``: tensor j is not stored but read from the model's weight file."""
    refs = refs or {}
    meta = {"format": SNAPSHOT_FORMAT, "step": str(step), "tensors": str(len(params)), "state": str(len(state))}
    for j, (name, digest) in refs.items():
        meta[f"ref:x.{j}"], meta[f"sha256:x.{j}"] = name, digest
    tensors = [(f"x.{j}", p) for j, p in enumerate(params) if j not in refs]
    tensors += [(f"state.{j}", t) for j, t in enumerate(state)]
    path = snapshot_path(out, step)
    save_tensors(path, tensors, meta)
    return path


def write_initial_snapshot(out: Path, model_name: str, model: torch.nn.Module, params: list[torch.Tensor]) -> dict:
    """Snapshot 0: every ZO tensor found bit-identical in the model's weight files is a reference
    (no copy on disk), the others are stored.  Returns ``{"referenced": k, "stored": m}``."""
    from hybridopt.llm.models import weight_files

    files = weight_files(model_name) if params else None
    refs: dict[int, tuple[str, str]] = {}
    if files is not None:
        for j, (p, names) in enumerate(zip(params, _file_names(model, params))):
            for name in names:
                stored = files.get(name)
                if stored is not None and tuple(stored.shape) == tuple(p.shape):
                    digest = tensor_digest(p)
                    if tensor_digest(stored.to(p.dtype)) == digest:
                        refs[j] = (name, digest)
                        break
                    del stored
    write_snapshot(out, 0, params, [], refs)
    return {"referenced": len(refs), "stored": len(params) - len(refs)}


def _check_header(f: TensorFile, step: int, n: int | None) -> None:
    m = f.metadata
    if m.get("format") != SNAPSHOT_FORMAT or m.get("step") != str(step):
        raise DamagedFileError(f"{f.path}: not the ZO snapshot of step {step}")
    if n is not None and m.get("tensors") != str(n):
        raise DamagedFileError(f"{f.path}: holds {m.get('tensors')} ZO tensors, the model has {n} "
                               "(a snapshot of another model?)")


def verify_snapshot(out: Path, step: int, n: int | None = None) -> None:
    """Read the stored tensors of a snapshot and check their digests (:class:`DamagedFileError`
    naming the file, or ``FileNotFoundError``); references are checked when they are read."""
    path = snapshot_path(out, step)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    with TensorFile(path) as f:
        _check_header(f, step, n)
        f.verify()


def initial_digests(out: Path) -> list[str | None]:
    """The digest of every initial ZO tensor, as recorded in snapshot 0."""
    with TensorFile(snapshot_path(out, 0)) as f:
        n = int(f.metadata.get("tensors", 0))
        return [f.metadata.get(f"sha256:x.{j}") for j in range(n)]


@torch.no_grad()
def load_snapshot(out: Path, step: int, params: list[torch.Tensor], model_name: str) -> list[torch.Tensor]:
    """Copy snapshot ``step`` into the live ``params`` tensor by tensor (referenced tensors are
    read from the model's weight files and checked against their digest); return the ZO rule
    state it holds (on the params' device)."""
    from hybridopt.llm.models import weight_files

    files = None
    with TensorFile(snapshot_path(out, step)) as f:
        _check_header(f, step, len(params))
        for j, p in enumerate(params):
            ref = f.metadata.get(f"ref:x.{j}")
            if ref is None:
                f.read_into(f"x.{j}", p)
                continue
            files = files or weight_files(model_name)
            stored = None if files is None else files.get(ref)
            if stored is None:
                raise DamagedFileError(f"{f.path}: initial tensor {ref!r} is no longer in the model's weight files")
            stored = stored.to(dtype=p.dtype)
            if tensor_digest(stored) != f.metadata.get(f"sha256:x.{j}"):
                raise DamagedFileError(f"the model's weight files changed since the run started: {ref!r} differs")
            p.copy_(stored)
            del stored
        state = [f.get(f"state.{j}") for j in range(int(f.metadata.get("state", 0)))]
    device = params[0].device if params else torch.device("cpu")
    return [t.to(device) for t in state]


@torch.no_grad()
def rebuild_zo(out: Path, cfg, s, base: int, log: list[ho.ZOLogEntry], fresh: bool) -> dict[str, Any]:
    """Set the live ZO block (and the optimizer's ZO rule state) to snapshot ``base`` + ``log``.
    ``fresh``: the live block still holds the initial weights (a model just loaded), so snapshot
    0 need not be read.  Returns what it did: the snapshot, the replayed steps and sweeps (ZO
    weights written / ZO block size), the seconds."""
    t0 = time.perf_counter()
    params = s.problem.zo_params
    s.optimizer.flush()
    state = None                       # the initial rule state, unless a later snapshot holds one
    if base > 0:
        state = load_snapshot(out, base, params, cfg.model)
    elif not fresh:
        load_snapshot(out, 0, params, cfg.model)
    elif snapshot_path(out, 0).is_file():  # a model just loaded: it must be the one the run started from
        changed = [j for j, (p, d) in enumerate(zip(params, initial_digests(out))) if d and tensor_digest(p) != d]
        if changed:
            raise ConfigError(f"the model's weights differ from those the run in {str(out)!r} started from "
                              f"({len(changed)} of {len(params)} ZO tensors); use the same model files")
    # The optimizer's own sweep context: its arena already holds the scratch buffers a sweep needs
    # (a fresh context would allocate a second set on top of them: the selection's memory peak).
    # (Its counters are taken afresh at the start of every optimizer step, so the replay's own count is a
    # difference.)
    context = s.optimizer.context
    written0 = context.counters.written
    new_state = ho.replay_zo_log(params, log, cfg.hybrid_config(), context=context, state=state)
    written = context.counters.written - written0
    for dst, src in zip(s.optimizer.rule_state, new_state):
        dst.copy_(src)
    numel = max(1, sum(p.numel() for p in params))
    return {"snapshot": base, "replayed_steps": len(log), "replayed_sweeps": written / numel,
            "seconds": time.perf_counter() - t0}


# ---- checkpoints ------------------------------------------------------------------------------------

def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint file (checksummed; one written before checksums is read as it is)."""
    if path.stat().st_size and not is_checked(path):
        try:   # format 2 (no checksum)
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - garbage is one line
            raise DamagedFileError(f"{path}: unreadable ({type(e).__name__})") from None
    return load_checked(path)


def _check_snapshots(out: Path, state: dict[str, Any]) -> None:
    """The snapshots a checkpoint needs (its own, and the selected step's) must be intact."""
    for step in sorted({int(state.get("zo_base", 0)), int(state["history"].get("best_zo_base", 0))} - {0}):
        try:
            verify_snapshot(out, step)
        except (DamagedFileError, FileNotFoundError) as e:
            raise DamagedFileError(f"its snapshot {SNAPSHOTS}/{snapshot_path(out, step).name} "
                                   f"{'is missing' if isinstance(e, FileNotFoundError) else 'is damaged'}") from None


def choose_checkpoint(out: Path, cfg, warn: Callable[[str], None]) -> dict[str, Any]:
    """The newest usable checkpoint of ``out`` (its checksum, its snapshots and its configuration
    checked, before any model is loaded); a skipped one gets a one-line ``warn``.  Returns the
    checkpoint's state with ``_file`` (its name) and ``_bases`` (the snapshot steps of the usable
    checkpoints on disk) added."""
    problems: list[str] = []
    chosen: dict[str, Any] | None = None
    bases: list[int] = []
    for name in (CHECKPOINT, PREVIOUS):
        path = Path(out) / name
        if not path.exists():
            continue
        try:
            state = read_checkpoint(path)
            fmt = state.get("format") if isinstance(state, dict) else None
            if fmt not in (2, CHECKPOINT_FORMAT):
                raise DamagedFileError(f"{path}: unknown checkpoint format {fmt!r}")
            if chosen is None and state["config"] != cfg.to_dict():
                mine = cfg.to_dict()   # both ways: an option added since the checkpoint was written counts
                diff = sorted(k for k in set(state["config"]) | set(mine) if state["config"].get(k) != mine.get(k))
                raise ConfigError(f"--resume with a different configuration than the checkpoint's (differs in: "
                                  f"{', '.join(diff)})")
            _check_snapshots(out, state)
        except DamagedFileError as e:
            problems.append(f"{name}: {str(e).removeprefix(f'{path}: ')}")
            continue
        bases.append(int(state.get("zo_base", 0)))
        if chosen is None:
            chosen = state
            chosen["_file"] = name
    if chosen is None:
        raise ConfigError(f"--resume: no usable checkpoint in {str(out)!r} ({'; '.join(problems)}); "
                          "pass --overwrite to start the run again")
    if chosen["_file"] != CHECKPOINT:
        warn(f"{problems[0]}; resuming from {chosen['_file']} (step {chosen['step']}) instead")
    chosen["_bases"] = bases
    return chosen


def write_checkpoint(out: Path, state: dict[str, Any]) -> None:
    """Write ``state`` as the new ``checkpoint.pt``, the old one becoming ``checkpoint.prev.pt``;
    the new file is complete (checksummed, fsynced) before anything is renamed, and at every
    instant both names hold a complete checkpoint (a hard link keeps the old one in place while
    it gains its new name)."""
    out = Path(out)
    new, cur, prev = out / f".{CHECKPOINT}.new", out / CHECKPOINT, out / PREVIOUS
    save_checked(new, state)
    if cur.exists():
        link = out / f".{PREVIOUS}.link"
        link.unlink(missing_ok=True)
        try:
            os.link(cur, link)
            os.replace(link, prev)
        except OSError:   # no hard links here: a moment with only the previous checkpoint
            os.replace(cur, prev)
    os.replace(new, cur)
    from hybridopt.io import _fsync_dir
    _fsync_dir(out)


def optimizer_state(opt: ho.HybridOptimizer, since: int) -> dict[str, Any]:
    """``opt.state_dict()`` without the ZO rule state and with the ZO log since step ``since``
    only (both rebuilt from the snapshot), and without flushing the pending ZO update (so a
    checkpoint does not change the folded sweeps of the run)."""
    return {"step": opt.step_count, "config": opt.config.to_dict(),
            "fo_opt": None if opt.fo_opt is None else opt.fo_opt.state_dict(), "zo_rule": [],
            "zo_log": [e.to_tuple() for e in opt.zo_log if e.step >= since]}


def read_selected(run_dir: Path) -> dict[str, Any]:
    """``selected.pt`` (checksummed; one written before checksums is read as it is), with
    ``zo_base`` (its snapshot step, 0 for older files)."""
    path = Path(run_dir) / SELECTED
    if is_checked(path):
        state = load_checked(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001
            raise DamagedFileError(f"{path}: unreadable ({type(e).__name__})") from None
    state.setdefault("zo_base", 0)
    return state


def write_selected(run_dir: Path, state: dict[str, Any]) -> None:
    save_checked(Path(run_dir) / SELECTED, state)


def prune_snapshots(out: Path, keep: set[int]) -> None:
    """Delete the snapshots not in ``keep`` (snapshot 0 is always kept)."""
    for step in snapshot_steps(out):
        if step and step not in keep:
            snapshot_path(out, step).unlink(missing_ok=True)


# ---- during a run -------------------------------------------------------------------------------------

class Keeper:
    """The checkpoints and snapshots of one run while it goes: rank 0 (``lead``) writes them,
    every rank reads them.  ``report`` collects what was restored and how (``result.json``,
    ``reliability``)."""

    def __init__(self, out: Path, cfg, s, policy: Policy, lead: bool, warn: Callable[[str], None]) -> None:
        self.out, self.cfg, self.s, self.policy, self.lead, self.warn = Path(out), cfg, s, policy, lead, warn
        self.has_zo = bool(s.problem.zo_params)
        self.base = 0              # step of the latest snapshot (what the next checkpoint's log starts from)
        self.bases: list[int] = []  # the snapshot steps of checkpoint.pt, checkpoint.prev.pt
        self.process_base = 0      # where this process's in-memory ZO log starts
        self._snapped = False
        self.last_checkpoint = self.last_snapshot = time.monotonic()
        self.report: dict[str, Any] = {}

    # -- starting ------------------------------------------------------------------------------
    def start(self) -> None:
        """A new run: snapshot 0 (references to the model's weight files, and the tensors not there)."""
        if self.has_zo and self.lead:
            self.report["initial_snapshot"] = write_initial_snapshot(self.out, self.cfg.model, self.s.model,
                                                                     self.s.problem.zo_params)

    @torch.no_grad()
    def resume(self, state: dict[str, Any]) -> dict[str, Any]:
        """Load a checkpoint chosen by :func:`choose_checkpoint` into the freshly built run; return
        its history's state.  The ZO block: its snapshot (or the loaded initial weights) + the log
        since, at most ``snapshot_every - 1`` steps."""
        s = self.s
        s.optimizer.load_state_dict(state["optimizer"])
        s.sampler.load_state_dict(state["sampler"])
        for p, v in zip(s.problem.fo_params, state["fo_params"]):
            p.copy_(v.to(p.device))
        self.base = self.process_base = int(state.get("zo_base", 0))
        self.bases = list(state.get("_bases", [self.base]))
        if self.has_zo:
            log = [e for e in s.optimizer.zo_log if e.step >= self.base]
            self.report["resume"] = {"checkpoint": state["_file"], "step": int(state["step"]),
                                     **rebuild_zo(self.out, self.cfg, s, self.base, log, fresh=True)}
            if self.lead and not snapshot_path(self.out, 0).is_file():   # written before snapshots existed
                self.start()
        if self.lead and state["_file"] != CHECKPOINT and (self.out / CHECKPOINT).exists():
            os.replace(self.out / CHECKPOINT, self.out / f"{CHECKPOINT}.damaged")  # so rotation keeps the good one
        return state["history"]

    # -- during training --------------------------------------------------------------------------
    def after_step(self, step: int) -> None:
        """Take a snapshot when one is due (every ``snapshot_every`` steps, or ``snapshot_minutes``
        after the last); before the step's evaluation, so that a new best step has a snapshot at
        itself when there is one."""
        p = self.policy
        if not (self.has_zo and self.lead):
            return
        late = p.snapshot_minutes and time.monotonic() - self.last_snapshot >= 60 * p.snapshot_minutes
        if step % p.snapshot_every == 0 or late:
            self.s.optimizer.flush()   # the ZO tensors must hold x_step
            try:
                write_snapshot(self.out, step, self.s.problem.zo_params, self.s.optimizer.rule_state)
            except OSError as e:
                self.warn(f"could not write the ZO snapshot of step {step} ({e.strerror or e}); checkpoints "
                          f"keep their log since step {self.base}; training goes on")
                return
            self.base, self._snapped, self.last_snapshot = step, True, time.monotonic()

    def checkpoint_due(self, step: int) -> bool:
        p = self.policy
        late = p.checkpoint_minutes and time.monotonic() - self.last_checkpoint >= 60 * p.checkpoint_minutes
        return self.lead and bool(self._snapped or (p.checkpoint_every and step % p.checkpoint_every == 0) or late)

    def checkpoint(self, hist) -> bool:
        """Write a checkpoint of the current step (rank 0); False (with a warning) when the disk refused it."""
        s = self.s
        step = s.optimizer.step_count
        state = {"format": CHECKPOINT_FORMAT, "config": self.cfg.to_dict(), "step": step,
                 "optimizer": optimizer_state(s.optimizer, self.base), "zo_base": self.base,
                 "sampler": s.sampler.state_dict(),
                 "fo_params": [p.detach().cpu().clone() for p in s.problem.fo_params],
                 "history": hist.state()}
        try:
            write_checkpoint(self.out, state)
        except OSError as e:
            kept = "the previous checkpoint is kept" if has_checkpoint(self.out) else "no checkpoint exists yet"
            self.warn(f"could not write the checkpoint of step {step} ({e.strerror or e}); {kept}; training goes on")
            # the next try at the next scheduled checkpoint, not at every step of a full disk
            self._snapped, self.last_checkpoint = False, time.monotonic()
            return False
        self.bases = [self.base] + self.bases[:1]
        self._snapped, self.last_checkpoint = False, time.monotonic()
        self.prune(hist)
        return True

    def prune(self, hist, keep_checkpoints: bool = True) -> None:
        keep = {hist.best_zo_base} | ({self.base, *self.bases} if keep_checkpoints else set())
        if self.lead and self.has_zo:
            prune_snapshots(self.out, keep)

    # -- selection ----------------------------------------------------------------------------------
    def selected_state(self, hist) -> dict[str, Any]:
        """What ``selected.pt`` holds: the selected step's FO block, its snapshot step and the ZO log
        from that snapshot to it."""
        return {"format": CHECKPOINT_FORMAT, "config": self.cfg.to_dict(), "best_step": hist.best_step,
                "fo_params": hist.best_fo, "zo_base": hist.best_zo_base, "zo_log": list(hist.best_zo_log)}

    @torch.no_grad()
    def restore(self, selected: dict[str, Any], fresh: bool) -> dict[str, Any]:
        """Put the selected step into the live model: its FO block, and its ZO block rebuilt in place
        from its snapshot (or the initial weights) + the log since."""
        s = self.s
        for p, v in zip(s.problem.fo_params, selected["fo_params"] or []):
            p.copy_(v.to(p.device))
        if not self.has_zo:
            return {"snapshot": None, "replayed_steps": 0, "replayed_sweeps": 0.0}
        log = [ho.ZOLogEntry.from_tuple(e) for e in selected["zo_log"]]
        return rebuild_zo(self.out, self.cfg, s, int(selected.get("zo_base", 0)), log, fresh=fresh)

    @torch.no_grad()
    def verify(self) -> bool:
        """Rebuild the ZO block in place from where this process started (snapshot or initial
        weights) + the whole ZO log since, and compare it bit for bit (SHA-256 per tensor) with
        the live one."""
        params = self.s.problem.zo_params
        self.s.optimizer.flush()
        live = [tensor_digest(p) for p in params]
        log = [e for e in self.s.optimizer.zo_log if e.step >= self.process_base]
        rebuild_zo(self.out, self.cfg, self.s, self.process_base, log, fresh=False)
        return [tensor_digest(p) for p in params] == live

    def finish(self, hist, keep_checkpoints: bool) -> None:
        """After the result is written: drop the checkpoints (unless kept) and every snapshot that
        ``selected.pt`` (and the kept checkpoints) do not need."""
        if not self.lead:
            return
        if not keep_checkpoints:
            for name in (CHECKPOINT, PREVIOUS, f"{CHECKPOINT}.damaged"):
                (self.out / name).unlink(missing_ok=True)
        self.prune(hist, keep_checkpoints=keep_checkpoints)
