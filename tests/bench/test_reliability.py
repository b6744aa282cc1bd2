"""Reliability at scale (issue #16): bounded replay, selection in the live model, checkpoints that
survive damage and full disks, one process per run directory, collapse and step-0 flags.

Tiny random llama, a few steps each; the 1000-step case is a checkpoint made without training
(a synthetic ZO log), so that resuming at step 1000 is measured, not trained for."""
import errno
import json
import os
import re
import subprocess
import sys

import pytest
import torch

import hybridopt as ho
from hybridopt import io as hio
from hybridopt.sweep import SweepContext
from hybridopt.benchmarks import checkpoints as ck
from hybridopt.benchmarks import runner
from hybridopt.benchmarks.config import ConfigError
from hybridopt.rng import step_seed

from .test_finetune import cfg_for, numbers


def _policy(k, **kw):
    return ck.Policy(snapshot_every=k, checkpoint_minutes=0, snapshot_minutes=0, **kw)


def _crash_at(monkeypatch, when):
    real = ho.HybridOptimizer.step

    def step(self, batch):
        if self.step_count == when:
            raise KeyboardInterrupt("simulated crash")
        return real(self, batch)
    monkeypatch.setattr(ho.HybridOptimizer, "step", step)
    return real


def _count_model_loads(monkeypatch):
    import hybridopt.llm
    calls = []
    real = hybridopt.llm.load_model

    def load_model(*a, **kw):
        calls.append(a)
        return real(*a, **kw)
    monkeypatch.setattr(hybridopt.llm, "load_model", load_model)
    return calls


# ---- bounded replay, fallback to the previous checkpoint ------------------------------------------

def test_resume_replays_at_most_k_steps_and_falls_back_to_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    K = 3
    cfg = cfg_for("hybrid", steps=9, checkpoint_every=1, eval_every=3)
    full = runner.run(cfg, tmp_path / "full", progress=False, policy=_policy(K))
    real = _crash_at(monkeypatch, 8)
    with pytest.raises(KeyboardInterrupt):
        runner.run(cfg, tmp_path / "crashed", progress=False, policy=_policy(K))
    monkeypatch.setattr(ho.HybridOptimizer, "step", real)
    crashed = tmp_path / "crashed"
    assert ck.read_checkpoint(crashed / ck.CHECKPOINT)["step"] == 8
    assert ck.read_checkpoint(crashed / ck.PREVIOUS)["step"] == 7
    assert {0, 6} <= set(ck.snapshot_steps(crashed)) <= {0, 3, 6}   # 3 only when it holds the best step so far
    import shutil
    both = tmp_path / "both"                  # a copy whose two checkpoints both need snapshot 6
    shutil.copytree(crashed, both)
    # the latest checkpoint is damaged: the previous one (step 7, snapshot 6) is used, with one warning
    data = (crashed / ck.CHECKPOINT).read_bytes()
    (crashed / ck.CHECKPOINT).write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    resumed = runner.run(cfg, crashed, resume=True, progress=False, policy=_policy(K))
    err = capsys.readouterr().err
    assert "checkpoint.pt: checksum mismatch (the file is truncated or damaged); resuming from " \
           "checkpoint.prev.pt (step 7) instead" in err
    rep = resumed["reliability"]["resume"]
    assert rep["checkpoint"] == ck.PREVIOUS and rep["step"] == 7 and rep["snapshot"] == 6
    assert rep["replayed_steps"] == 1 and rep["replayed_sweeps"] == pytest.approx(1.0)   # not 7: at most K - 1
    assert numbers(resumed) == numbers(full) and resumed["reliability"]["collapse"] is None
    sel = resumed["reliability"].get("selection")
    if sel is not None:
        assert sel["replayed_steps"] <= K - 1
    # a snapshot that every checkpoint needs is damaged: nothing usable, and the message says what to do
    path = ck.snapshot_path(both, 6)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match=r"no usable checkpoint .*its snapshot snapshots/zo-00000006.safetensors "
                                          r"is damaged.*pass --overwrite to start the run again"):
        ck.choose_checkpoint(both, cfg, warn=print)


def test_resume_at_step_1000_replays_at_most_k_steps(tmp_path):
    """A checkpoint at step 1000 whose ZO log has 1000 entries (random coefficients, no training):
    resuming replays the log since the snapshot (<= K - 1 sweeps), not 1000, and rebuilds the same
    weights as replaying all 1000 from the initial ones."""
    K, T = 128, 1000
    cfg = cfg_for("zo-full", steps=T + 1, eval_every=T + 1)
    out = tmp_path / "run"
    s = runner.setup(cfg)
    hc = cfg.hybrid_config()
    g = torch.Generator().manual_seed(0)
    base = (T // K) * K                 # 896: the last snapshot before step 1000
    # entries before the snapshot have gamma = 0, so x_base = x_0 exactly; the replayed tail is random
    log = [ho.ZOLogEntry(t, step_seed(hc.seed, t),
                         (torch.randn(hc.q, generator=g) if t >= base else torch.zeros(hc.q)), hc.lr_x, 1.0)
           for t in range(T)]
    initial = [p.detach().clone() for p in s.problem.zo_params]
    keeper = ck.Keeper(out, cfg, s, _policy(K), lead=True, warn=print)
    out.mkdir()
    keeper.start()
    ck.write_snapshot(out, base, s.problem.zo_params, s.optimizer.rule_state)
    keeper.base = base
    s.optimizer.zo_log, s.optimizer.step_count = log, T
    for _ in range(T):
        s.sampler.next_batch()
    hist = runner.History(dev_curve=[[0, 0.5]], best_acc=0.5, best_fo=[])
    assert keeper.checkpoint(hist)
    state = ck.read_checkpoint(out / ck.CHECKPOINT)
    assert state["zo_base"] == base and len(state["optimizer"]["zo_log"]) == T - base

    # the resumed weights (before step 1000 ran) are those of the full replay from the initial weights
    ref = [p.clone() for p in initial]
    ho.replay_zo_log(ref, log, hc)
    fresh = runner.setup(cfg)
    keeper2 = ck.Keeper(out, cfg, fresh, _policy(K), lead=False, warn=print)
    keeper2.resume({**state, "_file": ck.CHECKPOINT, "_bases": [base]})
    assert all(torch.equal(a, b) for a, b in zip(ref, fresh.problem.zo_params))

    res = runner.run(cfg, out, resume=True, progress=False, policy=_policy(K))
    rep = res["reliability"]["resume"]
    assert rep["step"] == T and rep["snapshot"] == base
    assert rep["replayed_steps"] == T - base <= K - 1 and rep["replayed_sweeps"] == pytest.approx(T - base)


# ---- selection in the live model --------------------------------------------------------------------

def _dev_values(monkeypatch, values):
    """Dev metric per evaluation, in order (the test split keeps the real metric)."""
    real = runner._evaluate
    it = iter(values)

    def fake(s, cfg, split, progress=None):
        return next(it) if split is s.dev else real(s, cfg, split, progress)
    monkeypatch.setattr(runner, "_evaluate", fake)


def test_selected_step_is_rebuilt_in_the_live_model_from_its_snapshot(tmp_path, monkeypatch):
    K = 2
    cfg = cfg_for("hybrid", steps=6, eval_every=1)
    _dev_values(monkeypatch, [0.1, 0.2, 0.3, 0.9, 0.4, 0.5, 0.6])     # best at step 3: snapshot 2 + 1 step
    loads = _count_model_loads(monkeypatch)
    contexts, replaying = [], []     # sweep contexts made while a replay runs
    real_init, real_rebuild = SweepContext.__init__, ck.rebuild_zo

    def counting_init(self, *a, **kw):
        if replaying:
            contexts.append(self)
        real_init(self, *a, **kw)

    def rebuild(*a, **kw):
        replaying.append(1)
        try:
            return real_rebuild(*a, **kw)
        finally:
            replaying.pop()
    monkeypatch.setattr(SweepContext, "__init__", counting_init)
    monkeypatch.setattr(ck, "rebuild_zo", rebuild)
    res = runner.run(cfg, tmp_path / "run", progress=False, policy=_policy(K))
    assert len(loads) == 1                                             # no second model, ever
    # the replay runs in the optimizer's own sweep context: no second arena of scratch buffers (it was the
    # selection's +1.2 % memory peak at smollm2 scale)
    assert contexts == []
    sel = res["reliability"]["selection"]
    assert sel["step"] == res["dev_metric"]["step"] == 3
    assert sel["snapshot"] == 2 and sel["replayed_steps"] == 1
    assert sel["peak_memory_after_bytes"] <= sel["peak_memory_before_bytes"]   # selection under the training peak
    assert ck.snapshot_steps(tmp_path / "run") == [0, 2]               # finished: what selected.pt needs
    assert not ck.has_checkpoint(tmp_path / "run")
    # export's path (a fresh model + selected.pt: snapshot 2 + 1 step) gives the weights of step 3 bit for bit
    monkeypatch.undo()
    _, s, step = runner.restore_selected(tmp_path / "run")
    assert step == 3
    _assert_weights_of_step(cfg, 3, s)


def _assert_weights_of_step(cfg, steps, s):
    """``s`` holds the weights an uninterrupted run of ``cfg`` has after ``steps`` steps."""
    ref = runner.setup(cfg)
    for _ in range(steps):
        ref.optimizer.step(ref.sampler.next_batch())
    ref.optimizer.flush()
    for a, b in zip(ref.problem.zo_params + ref.problem.fo_params, s.problem.zo_params + s.problem.fo_params):
        assert torch.equal(a, b)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """tiny-llama as a model directory on disk (safetensors), like any Hugging Face model."""
    from hybridopt.llm import load_model
    d = tmp_path_factory.mktemp("tiny-model")
    model, tok = load_model("tiny-llama")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_initial_weights_are_read_from_the_model_files(tiny_dir, tmp_path, monkeypatch):
    cfg = cfg_for("zo-full", steps=4, eval_every=1, model=str(tiny_dir))
    _dev_values(monkeypatch, [0.1, 0.9, 0.2, 0.3, 0.4])              # best at step 1: no snapshot after 0
    loads = _count_model_loads(monkeypatch)
    res = runner.run(cfg, tmp_path / "run", progress=False, policy=_policy(100), verify=True)
    assert len(loads) == 1
    info = res["reliability"]["initial_snapshot"]
    assert info["stored"] == 0 and info["referenced"] > 0                    # every tensor is in the model's file
    assert ck.snapshot_path(tmp_path / "run", 0).stat().st_size < 4096      # references, not weights
    sel = res["reliability"]["selection"]
    assert sel["snapshot"] == 0 and sel["replayed_steps"] == 1
    monkeypatch.undo()
    _, s, step = runner.restore_selected(tmp_path / "run")
    assert step == 1
    _assert_weights_of_step(cfg, 1, s)


def test_changed_model_files_are_detected(tiny_dir, tmp_path):
    """A run's initial weights (snapshot 0: digests) must be the model's: else resuming or exporting
    would rebuild another model."""
    import shutil
    from safetensors.torch import load_file, save_file

    d = tmp_path / "model"
    shutil.copytree(tiny_dir, d)
    cfg = cfg_for("zo-full", steps=2, eval_every=2, model=str(d))
    runner.run(cfg, tmp_path / "run", progress=False, test=False)
    w = load_file(str(d / "model.safetensors"))
    name = next(k for k in w if k.endswith("q_proj.weight"))
    w[name] = w[name] + 1
    save_file(w, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ConfigError, match="the model's weights differ from those the run .* started from"):
        runner.restore_selected(tmp_path / "run")


# ---- full disks, I/O errors -------------------------------------------------------------------------

class _FullDisk:
    """A file object that takes ``budget`` bytes, then fails like a full disk (or an I/O error)."""

    def __init__(self, fh, budget, code):
        self.fh, self.budget, self.code = fh, budget, code

    def write(self, data):
        raw = memoryview(data.encode() if isinstance(data, str) else data).cast("B")
        n = len(raw)
        if n > self.budget:
            self.fh.write(raw[: self.budget] if "b" in getattr(self.fh, "mode", "b") else
                          bytes(raw[: self.budget]).decode(errors="ignore"))
            raise OSError(self.code, os.strerror(self.code))
        self.budget -= n
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def _inject(monkeypatch, match, code=errno.ENOSPC, budget=100):
    """Every atomic write whose target name contains ``match`` fails after ``budget`` bytes."""
    real = hio._open_fd

    def open_fd(fd, mode):
        fh = real(fd, mode)
        name = os.readlink(f"/proc/self/fd/{fd}")
        return _FullDisk(fh, budget, code) if match(os.path.basename(name)) else fh
    monkeypatch.setattr(hio, "_open_fd", open_fd)


def test_a_full_disk_leaves_the_previous_checkpoint_and_result_intact(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"pid": 999_999_999, "host": "gone"}))    # stale: its holder is dead
    cfg = cfg_for("hybrid", steps=6, eval_every=3, checkpoint_every=2)
    real_write = ck.write_checkpoint
    written = []

    def write_checkpoint(o, state):
        if state["step"] == 4 and not written[-1:] == [4]:   # the disk is full from the checkpoint of step 4 on
            _inject(monkeypatch, lambda n: n.startswith(("..checkpoint", ".zo-", ".result.json")))
        written.append(state["step"])
        return real_write(o, state)
    monkeypatch.setattr(ck, "write_checkpoint", write_checkpoint)
    with pytest.raises(runner.RunError, match=r"could not write .*result.json \(No space left on device\); "
                                              r"the last checkpoint is kept: free space and continue with --resume"):
        runner.run(cfg, out, progress=False, policy=_policy(4))
    err = capsys.readouterr().err
    assert "took over the lock of process 999999999, which is no longer running" in err
    assert "could not write the checkpoint of step 4 (No space left on device); the previous checkpoint is " \
           "kept; training goes on" in err
    assert written == [2, 4, 6, 6]           # every 2 steps, with the step-4 snapshot's, and the final one
    kept = ck.read_checkpoint(out / ck.CHECKPOINT)     # intact: its checksum holds
    assert kept["step"] == 2 and not (out / ck.PREVIOUS).exists()
    assert not (out / runner.RESULT).exists() and not list(out.rglob("*.tmp"))
    assert not (out / ".lock").exists()
    # the disk has room again: the run resumes from step 2 and finishes like an uninterrupted one
    monkeypatch.setattr(hio, "_open_fd", lambda fd, mode: os.fdopen(fd, mode))
    monkeypatch.setattr(ck, "write_checkpoint", real_write)
    resumed = runner.run(cfg, out, resume=True, progress=False, policy=_policy(4))
    assert resumed["reliability"]["resume"]["step"] == 2
    before = (out / runner.RESULT).read_bytes()
    # an I/O error while rewriting result.json leaves the old one as it was
    _inject(monkeypatch, lambda n: n.startswith(".result.json"), code=errno.EIO, budget=2)
    with pytest.raises(OSError, match="Input/output error"):
        hio.write_json(out / runner.RESULT, {"x": 1})
    assert (out / runner.RESULT).read_bytes() == before and not list(out.glob(".*.tmp"))


# ---- one process per directory ----------------------------------------------------------------------

def test_a_second_process_on_the_same_out_is_refused(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from hybridopt.io import RunLock; "
                               f"RunLock({str(out)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"'{re.escape(str(out))}' is in use by process {holder.pid} on .*; wait"):
            runner.run(cfg_for("fo-peft", steps=2), out, progress=False)
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its lock is stale and taken over
    assert (out / ".lock").exists()
    lock = hio.RunLock(out).acquire()
    assert lock.stale["pid"] == holder.pid
    lock.release()
    assert not (out / ".lock").exists()


# ---- flags ----------------------------------------------------------------------------------------------

def test_a_collapsed_model_is_flagged(tmp_path, capsys):
    cfg = cfg_for("hybrid", steps=7, eval_every=7, optimizer={"lr_x": 1e6, "lr_y": 1e6})
    res = runner.run(cfg, tmp_path, progress=False)
    c = res["reliability"]["collapse"]
    assert c is not None and c["steps"] == runner.COLLAPSE_STEPS and c["step"] >= 1
    assert c["loss"] == pytest.approx(c["uniform_loss"]) and c["uniform_loss"] == pytest.approx(0.6931471805599453)
    assert json.loads((tmp_path / "result.json").read_text())["reliability"]["collapse"] == c
    assert f"the model collapsed at step {c['step']}: the training loss is 0.693147 (ln 2, a uniform choice " \
           "among the 2 candidates) and every gradient is zero for 5 steps" in capsys.readouterr().err


def test_cut_prompts_are_reported(tmp_path):
    res = runner.run(cfg_for("fo-peft", steps=1, eval_every=1), tmp_path, progress=False)
    assert any(w.startswith("prompts longer than max_length=64 tokens are cut from the left")
               for w in res["reliability"]["warnings"])
    assert res["reliability"]["collapse"] is None


def test_grid_whose_winner_is_step_0_is_flagged(tmp_path, monkeypatch, capsys):
    from hybridopt.benchmarks.cli import grid_main
    _dev_values(monkeypatch, [0.9, 0.1, 0.2])
    code = grid_main(["--task", "sst2", "--method", "fo-peft", "--model", "tiny-llama", "--steps", "2",
                      "--eval-every", "1", "--batch-size", "4", "--n-train", "8", "--n-dev", "4", "--n-test", "4",
                      "--max-length", "64", "--truncate-prompts", "--grid", "lr_y=1e-3", "--out", str(tmp_path / "g"), "--no-progress"])
    assert code == 0
    res = json.loads((tmp_path / "g" / "result.json").read_text())
    assert res["grid"]["selected_step_0"] is True
    assert "hybridopt grid: warning: the selected trial lr_y=0.001 is best at step 0, the model before training" \
           in capsys.readouterr().err


# ---- the file formats -------------------------------------------------------------------------------

def test_history_state_round_trips_and_reads_older_flat_checkpoints():
    """A checkpoint's history is the result schema's own records (one place for the per-step lists);
    the flat lists of checkpoints written before that are read into them."""
    h = runner.History(losses=[1.0, 0.5], best_acc=0.7, best_step=2)
    h.stationarity.epoch += [0, 0]
    h.stationarity.fo_grad_sq += [4.0, 3.0]
    h.changes.zo_first += [-0.1, -0.2]
    h.changes.fo_first += [-1.0, -0.5]
    back = runner.History.from_state(h.state())
    assert back == h and back.state() == h.state()
    flat = {k: v for k, v in h.state().items() if k not in ("stationarity", "changes")}
    flat.update(epochs=[0, 0], fo_grad_sq=[4.0, 3.0], zo_grad_sq_est=[], zo_curvature=[], zo_change=[-0.1, -0.2],
                zo_change_quad=[], fo_change=[-1.0, -0.5])
    old = runner.History.from_state(flat)
    assert old.stationarity == h.stationarity and old.changes == h.changes and old == h


def test_checksummed_files_detect_damage(tmp_path):
    p = tmp_path / "c.pt"
    hio.save_checked(p, {"a": torch.arange(5)})
    assert torch.equal(hio.load_checked(p)["a"], torch.arange(5))
    good = p.read_bytes()
    for bad, why in ((b"", "empty file"), (good[:7], "truncated"), (good[:-1], "checksum mismatch"),
                     (good[:40] + bytes([good[40] ^ 1]) + good[41:], "checksum mismatch"),
                     (b"PK\x03\x04 garbage", "not a checksummed file")):
        p.write_bytes(bad)
        with pytest.raises(hio.DamagedFileError, match=why):
            hio.load_checked(p)


def test_tensor_files_are_streamed_safetensors_with_digests(tmp_path):
    from safetensors.torch import load_file
    ts = [("a", torch.randn(3, 4)), ("b", torch.randn(5).bfloat16()), ("c", torch.tensor(2.0)),
          ("d", torch.tensor([True, False])), ("e", torch.zeros(0, 3))]
    p = tmp_path / "t.safetensors"
    hio.save_tensors(p, ts, {"step": 4})
    assert all(torch.equal(load_file(str(p))[k], v) for k, v in ts)     # a standard safetensors file
    with hio.TensorFile(p) as f:
        assert f.metadata["step"] == "4" and all(torch.equal(f.get(k), v) for k, v in ts)
        dst = torch.empty(3, 4)
        f.read_into("a", dst)
        assert torch.equal(dst, ts[0][1])
    raw = bytearray(p.read_bytes())
    raw[-3] ^= 1
    p.write_bytes(bytes(raw))
    with pytest.raises(hio.DamagedFileError, match="fails its checksum"), hio.TensorFile(p) as f:
        f.verify()
    p.write_bytes(bytes(raw[:-2]))
    with pytest.raises(hio.DamagedFileError, match="truncated"):
        hio.TensorFile(p)


def test_write_problem_finds_unwritable_places(tmp_path):
    (tmp_path / "f").write_text("x")
    assert hio.write_problem(tmp_path / "new" / "deep") is None
    assert hio.write_problem(tmp_path / "f" / "run") == f"{str(tmp_path / 'f')!r} is a file, not a directory"
    assert "cannot create files in '/proc'" in hio.write_problem("/proc/x")
    assert not list(tmp_path.glob(".hybridopt-probe-*"))


def test_checkpoint_rotation_keeps_two_complete_files(tmp_path):
    for step in (1, 2, 3):
        ck.write_checkpoint(tmp_path, {"format": 3, "step": step})
    assert ck.read_checkpoint(tmp_path / ck.CHECKPOINT)["step"] == 3
    assert ck.read_checkpoint(tmp_path / ck.PREVIOUS)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ck.CHECKPOINT, ck.PREVIOUS])


# ---- the measurement script ---------------------------------------------------------------------------

def test_resume_measurement_script_quick(tmp_path, capsys):
    """``benchmarks/perf/resume.py --quick`` (tiny-llama): well-formed, bounded replay, bit-exact."""
    from hybridopt.benchmarks.perf import resume
    assert resume.main(["--quick", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "resume.json").read_text())
    K = res["snapshot_every"]
    rows = {r["step"]: r for r in res["resume"]}
    assert sorted(rows) == list(resume.STEPS)
    for T, r in rows.items():
        assert r["snapshot"] == (T // K) * K and r["replayed_steps"] == T % K <= K - 1
        assert r["replayed_sweeps"] == pytest.approx(T % K) and r["resume_seconds"] > 0
        assert r["previous_scheme_seconds"] > 0
    assert rows[10]["bit_identical_to_full_replay"] and rows[100]["bit_identical_to_full_replay"]
    sel = res["selection"]
    assert sel["selected_step"] == 4 and sel["restored_from_snapshot"] == 3 and sel["replayed_steps"] == 1
    assert 0 < sel["rss_peak_selection_bytes"] and 0 < sel["rss_peak_training_bytes"]
