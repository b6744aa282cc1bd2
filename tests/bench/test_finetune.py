"""Fine-tuning runs on the tiny random llama: result files, resume, reconstruction, failures."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hybridopt as ho
from hybridopt.benchmarks import runner
from hybridopt.benchmarks.config import ConfigError, build_config

TINY = {"model": "tiny-llama", "steps": 6, "batch_size": 4, "eval_every": 2, "n_train": 16, "n_dev": 8,
        "n_test": 8, "max_length": 64, "truncate_prompts": True}
TIMING_KEYS = {"seconds_per_step", "peak_memory_bytes", "tokens_per_second", "timing", "machine", "git_commit",
               "step_seconds", "reliability"}


def cfg_for(method, task="sst2", **kw):
    """Tiny-model config; optimizer options are kept only where the method has that block."""
    from hybridopt.benchmarks.config import FO_OPTIONS, ZO_OPTIONS

    over = {**TINY, **kw}
    opt = {"lr_x": 1e-3, "lr_y": 1e-2, "mu": 1e-2, **over.get("optimizer", {})}
    keep = (ZO_OPTIONS if "zo" in method or method == "hybrid" else ()) + \
           (FO_OPTIONS if "fo" in method or method == "hybrid" else ())
    over["optimizer"] = {k: v for k, v in opt.items() if k in keep}
    return build_config(task, method, None, over)


def numbers(result):
    return {k: v for k, v in result.items() if k not in TIMING_KEYS}


@pytest.mark.parametrize("method", ho.METHODS)
def test_short_run_writes_valid_result(method, tmp_path):
    res = runner.run(cfg_for(method), tmp_path, progress=False, verify=True)
    on_disk = json.loads((tmp_path / "result.json").read_text())
    for key in ("task", "method", "model", "steps", "dev_accuracy", "test_accuracy", "train_loss_curve",
                "dev_curve", "seconds_per_step", "peak_memory_bytes", "tokens_per_second", "config",
                "git_commit", "seeds"):
        assert key in on_disk, key
    assert on_disk["method"] == method and on_disk["steps"] == 6
    assert len(on_disk["train_loss_curve"]) == 6
    assert all(math.isfinite(l) for _, l in on_disk["train_loss_curve"])
    assert [s for s, _ in on_disk["dev_curve"]] == [0, 2, 4, 6]
    assert 0 <= on_disk["test_accuracy"] <= 1 and on_disk["dev_accuracy"]["step"] in (0, 2, 4, 6)
    opt = on_disk["config"]["optimizer"]
    assert (opt["lr_x"] == 1e-3) == (method in ("zo-full", "zo-peft", "hybrid"))
    assert (opt["lr_y"] == 1e-2) == (method in ("fo-full", "fo-peft", "hybrid"))
    calls = res["oracle_calls"]
    if method.startswith("fo"):
        assert calls["zo_weight_passes_per_step"] == calls["zo_draws_per_step"] == 0
    else:  # one folded sweep per step (+ the embedding rows it looks up), the update written once
        assert 1.0 <= calls["zo_weight_passes_per_step"] < 1.5 and calls["zo_weight_writes_per_step"] == 1.0
    assert not list(tmp_path.glob(".*.tmp"))  # no stray temporaries


@pytest.mark.parametrize("method", ho.METHODS)
def test_resume_after_crash_is_bit_identical(method, tmp_path, monkeypatch):
    cfg = cfg_for(method, checkpoint_every=2, optimizer={"fo_optimizer": "adam"})
    full = runner.run(cfg, tmp_path / "full", progress=False)

    real_step = ho.HybridOptimizer.step

    def crashing(self, batch):
        if self.step_count == 5:
            raise KeyboardInterrupt("simulated crash")
        return real_step(self, batch)

    monkeypatch.setattr(ho.HybridOptimizer, "step", crashing)
    with pytest.raises(KeyboardInterrupt):
        runner.run(cfg, tmp_path / "crashed", progress=False)
    assert (tmp_path / "crashed" / "checkpoint.pt").exists()
    assert not (tmp_path / "crashed" / "result.json").exists()
    monkeypatch.setattr(ho.HybridOptimizer, "step", real_step)
    with pytest.raises(ConfigError, match="unfinished run"):
        runner.run(cfg, tmp_path / "crashed", progress=False)
    resumed = runner.run(cfg, tmp_path / "crashed", resume=True, progress=False)
    assert numbers(resumed) == numbers(full)
    # metrics.jsonl: the lines the crash left after the checkpoint are dropped, so it matches too
    assert metrics(tmp_path / "crashed") == metrics(tmp_path / "full")


def metrics(run_dir):
    """metrics.jsonl without timings."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_zo_checkpoint_is_small_and_rebuilds_weights(tmp_path):
    from hybridopt.benchmarks.checkpoints import read_checkpoint, snapshot_path

    cfg = cfg_for("zo-full", checkpoint_every=3)
    res = runner.run(cfg, tmp_path, progress=False, verify=True)
    ckpt = read_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["fo_params"] == []          # the ZO block is stored as its log since its snapshot, not its weights
    assert ckpt["zo_base"] == 0 and len(ckpt["optimizer"]["zo_log"]) == 6
    size = (tmp_path / "checkpoint.pt").stat().st_size
    zo_bytes = res["sizes"]["zo_params"] * 4
    assert size < zo_bytes / 20
    assert snapshot_path(tmp_path, 0).stat().st_size > zo_bytes   # tiny-llama has no weight file: snapshot 0 holds it


def test_finished_run_is_not_overwritten(tmp_path):
    cfg = cfg_for("fo-peft", steps=2)
    runner.run(cfg, tmp_path, progress=False)
    before = (tmp_path / "result.json").read_bytes()
    with pytest.raises(ConfigError, match="finished run"):
        runner.run(cfg, tmp_path, progress=False)
    assert (tmp_path / "result.json").read_bytes() == before
    runner.run(cfg, tmp_path, progress=False, overwrite=True)
    with pytest.raises(ConfigError, match="no checkpoint to resume"):
        runner.run(cfg, tmp_path / "new", resume=True, progress=False)


def test_non_finite_loss_stops_with_clear_message(tmp_path):
    cfg = cfg_for("fo-full", checkpoint_every=1, optimizer={"lr_y": 1e12, "fo_optimizer": "sgd"})
    with pytest.raises(runner.NonFiniteError, match=r"non-finite training loss or weights at step \d"):
        runner.run(cfg, tmp_path, progress=False)
    assert not (tmp_path / "result.json").exists()


def test_same_seed_same_numbers(tmp_path):
    a = runner.run(cfg_for("hybrid"), tmp_path / "a", progress=False)
    b = runner.run(cfg_for("hybrid"), tmp_path / "b", progress=False)
    c = runner.run(cfg_for("hybrid", seed=1), tmp_path / "c", progress=False)
    assert numbers(a) == numbers(b)
    assert a["train_loss_curve"] != c["train_loss_curve"]
    assert a["seeds"] == {"seed": 0, "sampler": 0, "zo_directions": 0, "adapter_init": 0}


def _cli(args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "hybridopt", "finetune", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _tiny_args(out, steps=16):
    return ["--task", "sst2", "--method", "hybrid", "--model", "tiny-llama", "--steps", str(steps),
            "--batch-size", "4", "--eval-every", "10", "--n-train", "16", "--n-dev", "8", "--n-test", "8",
            "--max-length", "64", "--truncate-prompts", "--lr-x", "1e-3", "--lr-y", "1e-2", "--checkpoint-every", "2",
            "--out", str(out), "--no-progress"]


def _wait_for(path, proc, timeout=120):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout
        time.sleep(0.05)


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    ref = _cli(_tiny_args(tmp_path / "ref"))
    victim = _cli(_tiny_args(tmp_path / "killed"))
    _wait_for(tmp_path / "killed" / "checkpoint.pt", victim)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "killed" / "result.json").exists()
    resumed = _cli(_tiny_args(tmp_path / "killed") + ["--resume"])
    assert resumed.wait(timeout=300) == 0, resumed.communicate()
    assert ref.wait(timeout=300) == 0, ref.communicate()
    a = json.loads((tmp_path / "ref" / "result.json").read_text())
    b = json.loads((tmp_path / "killed" / "result.json").read_text())
    assert numbers(a) == numbers(b)


def test_sigterm_saves_a_checkpoint_and_exits_nonzero(tmp_path):
    args = _tiny_args(tmp_path / "r", steps=400)
    args[args.index("--checkpoint-every") + 1] = "0"
    proc = _cli(args)
    log = tmp_path / "r" / "metrics.jsonl"
    _wait_for(log, proc)
    t0 = time.time()
    while '"event": "step"' not in log.read_text():   # training has started (the signal handlers are set)
        assert proc.poll() is None and time.time() - t0 < 120
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "checkpoint saved, continue with --resume" in err
    from hybridopt.benchmarks.checkpoints import read_checkpoint
    ckpt = read_checkpoint(tmp_path / "r" / "checkpoint.pt")
    assert 0 < ckpt["step"] < 400


@pytest.mark.parametrize("task", ["sst2", "wsc", "winogrande"])
@pytest.mark.parametrize("method", ho.METHODS)
def test_every_method_runs_on_every_task(task, method, tmp_path):
    res = runner.run(cfg_for(method, task=task, steps=2, eval_every=2), tmp_path, progress=False)
    assert res["task"] == task and len(res["train_loss_curve"]) == 2
    assert all(math.isfinite(l) for _, l in res["train_loss_curve"])
    assert 0 <= res["test_accuracy"] <= 1
