"""Resume and selection cost at scale (issue #16), measured side by side in one process.

    python -m hybridopt.benchmarks.perf.resume --out docs/results/reliability      # smollm2-135m, CPU, minutes
    python -m hybridopt.benchmarks.perf.resume --quick --out /tmp/resume            # tiny-llama, seconds (tests)
    python -m hybridopt.benchmarks.perf.resume --selection-only --out DIR           # the selection memory alone

Writes ``OUT/resume.json`` (``OUT/selection.json`` with ``--selection-only``) and prints it.

**Resume at step T** (T = 10, 100, 1000 and the worst case 1099 for the default snapshot interval
K = 100): a run directory is made at step T without training — snapshot 0 (references to the
model's weight file), the snapshot at the last multiple of K, and a checkpoint whose ZO log has T
entries (coefficients 0 before that snapshot, so that it holds x_0, and random after it) — then
the timed resume does what ``hybridopt finetune --resume`` does before its first step: load the
model (:func:`runner.setup`), choose and verify the checkpoint (checksums, snapshot digests), and
rebuild the ZO block in the live model (:meth:`Keeper.resume`: snapshot + at most K - 1 replayed
sweeps).  Beside it, the cost of the previous scheme (a second model loaded, then the whole log
replayed from x_0): measured for T <= ``--max-full-replay`` and extrapolated linearly above (T
identical sweeps), and the rebuilt weights are compared bit for bit with the full replay.

**Selection memory**: a real short run (hybrid: ZO base + FO LoRA) whose dev metric is pinned so that
an earlier step than the last is selected (the measurement is of the restore, not of accuracy);
the resident set size is sampled every few milliseconds, and its maximum during training is
compared with its maximum while the selected step is rebuilt in the live model.  The previous
scheme built a second model for that: ``second_model_bytes``.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

STEPS = (10, 100, 1000, 1099)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Sampler(threading.Thread):
    """The resident set size every ``dt`` seconds, with a label saying what the run is doing."""

    def __init__(self, dt: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.dt, self.label, self.peaks, self._halt = dt, "setup", {}, threading.Event()

    def note(self) -> None:
        self.peaks[self.label] = max(self.peaks.get(self.label, 0), _rss())

    def run(self) -> None:
        while not self._halt.is_set():
            self.note()
            time.sleep(self.dt)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _cfg(model: str, method: str, **kw):
    from hybridopt.benchmarks.config import build_config
    base = {"model": model, "batch_size": 1, "max_length": 48, "truncate_prompts": True, "n_train": 16, "n_dev": 4, "n_test": 4,
            "eval_every": 1}
    return build_config("sst2", method, None, {**base, **kw})


def selection_memory(model: str, out: Path, steps: int = 8, k: int = 3, best: int = 4) -> dict[str, Any]:
    """A real run of ``steps`` steps (snapshot every ``k``) whose dev metric peaks at step ``best``."""
    from hybridopt.benchmarks import runner
    from hybridopt.benchmarks import checkpoints as ck

    cfg = _cfg(model, "hybrid", steps=steps)
    sampler = _Sampler()
    real_eval, real_restore, real_setup = runner._evaluate, ck.Keeper.restore, runner.setup

    def pinned(s, c, split, progress=None):
        if split is s.dev:
            step = s.optimizer.step_count
            return 0.9 if step == best else 0.1 + 0.01 * step
        return real_eval(s, c, split, progress)

    def restore(self, selected, fresh):
        sampler.label = "selection"
        sampler.note()
        try:
            return real_restore(self, selected, fresh)
        finally:
            sampler.note()
            sampler.label = "test"

    def setup(*a, **kw):
        s = real_setup(*a, **kw)
        sampler.label = "training"
        return s

    runner._evaluate, ck.Keeper.restore, runner.setup = pinned, restore, setup
    sampler.start()
    try:
        res = runner.run(cfg, out, progress=False, policy=ck.Policy(snapshot_every=k, checkpoint_minutes=0,
                                                                      snapshot_minutes=0))
    finally:
        sampler.stop()
        runner._evaluate, ck.Keeper.restore, runner.setup = real_eval, real_restore, real_setup
    sel = res["reliability"]["selection"]
    p = sampler.peaks
    return {"method": "hybrid", "steps": steps, "snapshot_every": k, "selected_step": sel["step"],
            "restored_from_snapshot": sel["snapshot"], "replayed_steps": sel["replayed_steps"],
            "restore_seconds": sel["seconds"],
            "rss_peak_training_bytes": p.get("training", 0), "rss_peak_selection_bytes": p.get("selection", 0),
            "selection_over_training": p.get("selection", 0) / max(1, p.get("training", 0)),
            "ru_maxrss_before_selection_bytes": sel["peak_memory_before_bytes"],
            "ru_maxrss_after_selection_bytes": sel["peak_memory_after_bytes"],
            "second_model_bytes": 4 * res["sizes"]["zo_params"],
            "result_peak_memory_bytes": res["peak_memory_bytes"]}


def _synthetic_run(out: Path, cfg, s, T: int, K: int) -> list:
    """A run directory at step T (see the module docstring), written from ``s`` (which holds x_0)."""
    import hybridopt as ho
    from hybridopt.benchmarks import checkpoints as ck
    from hybridopt.benchmarks import runner
    from hybridopt.rng import step_seed

    hc = cfg.hybrid_config()
    base = (T // K) * K
    g = torch.Generator().manual_seed(T)
    log = [ho.ZOLogEntry(t, step_seed(hc.seed, t), torch.randn(hc.q, generator=g) if t >= base else torch.zeros(hc.q),
                         hc.lr_x, 1.0) for t in range(T)]
    out.mkdir(parents=True)
    keeper = ck.Keeper(out, cfg, s, ck.Policy(snapshot_every=K), lead=True, warn=print)
    keeper.start()
    if base:
        ck.write_snapshot(out, base, s.problem.zo_params, s.optimizer.rule_state)
    keeper.base = base
    saved = s.optimizer.zo_log, s.optimizer.step_count
    s.optimizer.zo_log, s.optimizer.step_count = log, T
    try:
        assert keeper.checkpoint(runner.History(dev_curve=[[0, 0.5]], best_acc=0.5, best_fo=[]))
    finally:
        s.optimizer.zo_log, s.optimizer.step_count = saved
    return log


def resume_times(model: str, root: Path, steps=STEPS, max_full_replay: int = 100) -> list[dict[str, Any]]:
    import hybridopt as ho
    from hybridopt.benchmarks import checkpoints as ck
    from hybridopt.benchmarks import runner

    cfg = _cfg(model, "zo-full", steps=max(steps) + 1, eval_every=max(steps) + 1)
    K = ck.Policy().snapshot_every
    writer = runner.setup(cfg)
    x0 = writer.problem.zo_params
    logs = {T: _synthetic_run(root / f"T{T}", cfg, writer, T, K) for T in steps}
    rows = []
    full_sweep_s = None
    for T in steps:
        gc.collect()
        out = root / f"T{T}"
        t0 = time.perf_counter()
        s = runner.setup(cfg)                                   # the model load of a resume
        t1 = time.perf_counter()
        chosen = ck.choose_checkpoint(out, cfg, warn=print)     # checksum + snapshot digests
        t2 = time.perf_counter()
        keeper = ck.Keeper(out, cfg, s, ck.Policy(snapshot_every=K), lead=False, warn=print)
        keeper.resume(chosen)
        t3 = time.perf_counter()
        rep = keeper.report["resume"]
        row = {"step": T, "snapshot": rep["snapshot"], "replayed_steps": rep["replayed_steps"],
               "replayed_sweeps": rep["replayed_sweeps"],
               "resume_seconds": t3 - t0, "model_load_seconds": t1 - t0, "verify_seconds": t2 - t1,
               "rebuild_seconds": t3 - t2}
        # the previous scheme: a second model, then the whole log replayed from x_0
        log = logs[T]
        if T <= max_full_replay:
            ref = [p.detach().clone() for p in x0]
            t4 = time.perf_counter()
            ho.replay_zo_log(ref, log, cfg.hybrid_config())
            full = time.perf_counter() - t4
            full_sweep_s = full / max(1, T)
            row["bit_identical_to_full_replay"] = all(torch.equal(a, b) for a, b in zip(ref, s.problem.zo_params))
            del ref
            row["previous_scheme_seconds"] = (t1 - t0) + full
            row["previous_scheme_measured"] = True
        elif full_sweep_s is not None:
            row["previous_scheme_seconds"] = (t1 - t0) + full_sweep_s * T
            row["previous_scheme_measured"] = False
        rows.append(row)
        del s, chosen
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hybridopt.benchmarks.perf.resume", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny-llama (seconds)")
    p.add_argument("--model", default=None, help="model preset (default smollm2-135m; --quick: tiny-llama)")
    p.add_argument("--out", default="resume_out", help="output directory (resume.json)")
    p.add_argument("--max-full-replay", type=int, default=100,
                   help="measure the previous scheme's full replay up to this step, extrapolate above (default 100)")
    p.add_argument("--selection-only", action="store_true",
                   help="measure only the selection memory (about a minute); writes OUT/selection.json")
    a = p.parse_args(argv)
    model = a.model or ("tiny-llama" if a.quick else "smollm2-135m")
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="hybridopt-resume-") as tmp:
        sel = selection_memory(model, Path(tmp) / "selection")
        rows = None if a.selection_only else resume_times(model, Path(tmp) / "resume",
                                                          max_full_replay=a.max_full_replay)
    import hybridopt as ho
    from hybridopt.benchmarks.checkpoints import Policy
    res = {"command": "python -m hybridopt.benchmarks.perf.resume " + " ".join(argv if argv is not None else sys.argv[1:]),
           "model": model, "device": "cpu", "snapshot_every": Policy().snapshot_every,
           "resume": rows, "selection": sel, "wall_seconds": time.time() - t0,
           "machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
                       "torch": torch.__version__, "hybridopt": ho.__version__,
                       "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    from hybridopt.io import write_json
    if a.selection_only:
        res.pop("resume")
    write_json(out / ("selection.json" if a.selection_only else "resume.json"), res)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
