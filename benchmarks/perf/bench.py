"""Step time, ZO machinery time, draws/passes and peak memory of the five methods and a MeZO
reference, on one workload.

Protocol (one run, one model, one fixed mini-batch, one sequence length):

* **Timing** (in-process): every timed item runs once per round, in a rotated order
  (interleaved), after ``warmup`` discarded rounds; the reported value is the **median** over
  ``reps`` rounds.  Items: a plain no-grad forward (``forward``); the zo-full block's paired
  probe (f(x+μu) and f(x−μu) in one doubled-batch forward, ``paired_probe``); one update sweep
  of the zo-full block (``update_sweep``); one in-place pass over the zo-full block's memory
  (``weight_pass``: ``x.mul_(1.0)``, each weight read and written once, values unchanged — the
  least memory traffic of the folded update, the one pass per step of issue #17); one optimizer
  step of each method (fo-full with AdamW, fo-peft, zo-full, zo-peft, hybrid — the paired estimator, the theorem's — plus
  ``hybrid-central`` (the same estimator from two forwards) and ``hybrid-forward``
  (``estimator="forward"``)); one step of :class:`MeZOReference`; and an *instrumented* step of
  each ZO method, with the sweep context's phase timer on (``draw``, ``perturb``, ``update``).
  All methods share one model; before an item the blocks' ``requires_grad`` flags are set for
  that method and every ``.grad`` is dropped.
* **Steady state of a folded step**: a step applies the previous step's pending update inside
  its probe sweep.  Items interleave, so before each timed step of a folded method a pending
  update with zero coefficients is primed (untimed; applying it costs exactly what a real one
  costs: the regeneration of u and the write), and the step's own pending update is dropped
  after it (untimed: the benchmark's learning rates are 1e-9, the weights do not move).
* **ZO machinery time** of a ZO method = the phase timer's ``draw`` + ``perturb`` + ``update``
  seconds in one instrumented step (not the matmuls; draws inside the update counted once).
* **Draws / writes / passes per step**: the core's own counters (``StepStats.zo_draws``,
  ``zo_writes``, ``zo_passes``; embedding lookups apart), from the last zo-full step.
* **Memory**: CPU: each method in its own process (forked from one
  worker that imported the libraries); peak RSS (``VmHWM``, reset through
  ``/proc/self/clear_refs`` after the model is built) minus the RSS before the model was built
  (interpreter + libraries), over ``memory_steps`` steps: weights, gradients, optimizer state,
  activations (the doubled batch of a paired probe included), allocator slack.  CUDA: in-process
  ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (weights included),
  fo-full last so its Adam state does not contaminate the others.  ``inference`` = a plain
  no-grad forward of the same model and batch.
"""
from __future__ import annotations

import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

import hybridopt as ho
from hybridopt import counter, methods
from hybridopt.methods import METHODS
from hybridopt.sweep import CHUNK_ELEMENTS, PhaseTimer
from hybridopt.zo_rules import ZOUpdate

from .mezo_reference import PASSES_PER_STEP, MeZOReference, named_subset

SCHEMA = "hybridopt.bench/2"
#: benchmark items that are the hybrid method with another estimator
VARIANTS = {"hybrid-central": "central", "hybrid-forward": "forward"}
STEP_ITEMS = METHODS + tuple(VARIANTS) + ("mezo-reference",)
ZO_METHODS = tuple(m for m in METHODS if methods.get(m).has_zo) + tuple(VARIANTS)
MEMORY_ITEMS = ("inference",) + METHODS + ("mezo-reference",)

#: paper shapes built randomly initialised (no weights, no network)
SHAPES: dict[str, dict[str, Any]] = {
    "opt-1.3b": dict(arch="opt", hidden=2048, layers=24, heads=32, ffn=8192, vocab=50272),
    "llama-7b": dict(arch="llama", hidden=4096, layers=32, heads=32, ffn=11008, vocab=32000),
}
#: the same architectures, shrunk (CPU tests of the GPU script)
SMALL = dict(hidden=64, layers=2, heads=4, ffn=128, vocab=1000)

#: ratio -> (comparison, bound); issue #17's targets (the hybrid step's depends on the direction law)
GOALS = {
    "hybrid_step_over_floor": ("<=", 1.10),
    "zo_step_over_two_forwards": ("<=", 1.30),
    "zo_step_over_mezo_reference": ("<=", 0.45),
    "zo_draws_per_step": ("<=", 2),
    "zo_weight_writes_per_step": ("<=", 1),
    "zo_weight_passes_per_step": ("<=", 1),
    "hybrid_memory_over_fo_peft": ("<=", 1.05),
    "zo_full_memory_over_inference": ("<=", 1.10),
    "hybrid_memory_over_fo_full": ("<=", 0.35),
}
GOALS_BY_DIRECTION = {"rademacher": {"hybrid_step_over_floor": ("<=", 1.03)}}

#: the goals' time ratios, as functions of item -> seconds: applied to the medians (``ratios``), to
#: the CPU-time medians and to every timed round (``round_ratios``: the items of one round run
#: within seconds of each other, so they share the machine's state; a 2-core VM's speed moves by
#: ±10% within a run, and a ratio of separately taken medians can pair a fast numerator with a
#: slow denominator)
TIME_RATIOS: dict[str, Callable[[dict[str, float]], float]] = {
    "hybrid_step_over_floor": lambda t: _ratio(t["step[hybrid]"], t["step[fo-peft]"] + 2 * t["forward"]),
    "zo_step_over_two_forwards": lambda t: _ratio(t["step[zo-full]"], 2 * t["forward"]),
    "zo_step_over_mezo_reference": lambda t: _ratio(t["step[zo-full]"], t["step[mezo-reference]"]),
}


@dataclass
class BenchConfig:
    model: str = "smollm2-135m"     # preset (tiny-llama, smollm2-135m, ...) or shape:opt-1.3b / shape:llama-7b
    batch: int = 16
    seq_len: int | None = None      # sst2: left-truncation length (None: prompts as they are); shapes: tokens
    dtype: str = "float32"
    device: str = "cpu"
    reps: int = 5
    warmup: int = 1
    threads: int | None = None
    memory: bool = True
    memory_steps: int = 2
    profile: bool = True
    memory_only: bool = False       # skip timing and profile (large shapes on CPU)
    memory_items: tuple[str, ...] = MEMORY_ITEMS
    shrink: bool = False            # shape models: use the SMALL sizes (CPU tests of gpu.sh)
    lora_r: int = 8
    mu: float = 1e-3
    direction: str = "gaussian"     # ZO directions of the hybridopt methods (the MeZO reference is Gaussian)
    chunk_elements: int | None = None  # the core's chunk limit (None: its default; small: CPU tests of gpu.sh)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- workload -----------------------------------------------------------------------------------

@dataclass
class Workload:
    model: torch.nn.Module
    loss_fn: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]
    batch: torch.Tensor
    n: int
    base: list
    adapter: list
    info: dict[str, Any] = field(default_factory=dict)


def _shape_model(name: str, cfg: BenchConfig):
    from transformers import AutoModelForCausalLM, LlamaConfig, OPTConfig
    from hybridopt.llm.models import _quiet_transformers, resolve_dtype

    _quiet_transformers()
    key = name.split(":", 1)[1]
    if key not in SHAPES:
        raise ValueError(f"unknown shape {key!r}; valid: {', '.join(SHAPES)}")
    s = {**SHAPES[key], **(SMALL if cfg.shrink else {})}
    if s["arch"] == "opt":
        hc = OPTConfig(hidden_size=s["hidden"], num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                       ffn_dim=s["ffn"], vocab_size=s["vocab"], word_embed_proj_dim=s["hidden"],
                       max_position_embeddings=2048, pad_token_id=1, bos_token_id=2, eos_token_id=2)
    else:
        hc = LlamaConfig(hidden_size=s["hidden"], num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                         num_key_value_heads=s["heads"], intermediate_size=s["ffn"], vocab_size=s["vocab"],
                         max_position_embeddings=2048, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                         tie_word_embeddings=False)
    dev = torch.device(cfg.device)
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        with dev:
            model = AutoModelForCausalLM.from_config(hc, dtype=resolve_dtype(cfg.dtype))
    model.eval()
    return model, {"shape": {k: v for k, v in s.items()}, "shrunk": cfg.shrink}


def build_workload(cfg: BenchConfig) -> Workload:
    """Model + LoRA adapter (r=cfg.lora_r on q_proj/v_proj, MeZO's) + loss over one fixed mini-batch."""
    from hybridopt.llm import attach_peft, load_model, parameter_blocks

    info: dict[str, Any] = {"model": cfg.model, "dtype": cfg.dtype, "device": cfg.device}
    if cfg.model.startswith("shape:"):
        model, extra = _shape_model(cfg.model, cfg)
        info.update(extra)
        tok = None
    else:
        model, tok = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
    model = attach_peft(model, kind="lora", r=cfg.lora_r, alpha=2 * cfg.lora_r, seed=cfg.seed)
    base, adapter = parameter_blocks(model)
    info.update(base_params=sum(p.numel() for p in base), adapter_params=sum(p.numel() for p in adapter),
                base_tensors=len(base), adapter_tensors=len(adapter),
                max_tensor_numel=max(p.numel() for p in base + adapter))
    batch = torch.arange(cfg.batch)
    if tok is not None:
        from hybridopt.benchmarks.scoring import encode_split, make_loss_fn
        from hybridopt.benchmarks.tasks import load_split

        examples = load_split("sst2", "train")
        if len(examples) < cfg.batch:
            raise ValueError(f"batch {cfg.batch} exceeds the {len(examples)} SST-2 training examples")
        enc = encode_split(tok, examples[:cfg.batch], max_length=cfg.seq_len)
        loss_fn = make_loss_fn(enc)
        lengths = [len(c[0]) for c in enc.contexts]
        info.update(data="sst2 train[:batch] (single-token scoring path: one forward per example)",
                    batch=cfg.batch, padded_seq_len=max(lengths), tokens_per_step=enc.num_tokens())
        n = len(enc)
    else:
        loss_fn, n = _synthetic_loss(model, cfg, info)
    return Workload(model, loss_fn, batch, n, base, adapter, info)


def _synthetic_loss(model, cfg: BenchConfig, info: dict[str, Any]):
    """Random token ids (batch x seq_len); 2-way classification read from the last position's
    logits (the shape of the SST-2 single-token path), ``logits_to_keep=1``."""
    seq = cfg.seq_len or 64
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(cfg.seed)
    ids = torch.randint(3, vocab, (cfg.batch, seq), generator=g)
    gold = torch.randint(0, 2, (cfg.batch,), generator=g)
    cand = torch.tensor([3, 4])
    dev = torch.device(cfg.device)
    ids, gold, cand = ids.to(dev), gold.to(dev), cand.to(dev)

    def loss_fn(m, idx):
        idx = idx.to(dev)
        logits = m(input_ids=ids[idx], use_cache=False, logits_to_keep=1).logits[:, -1]
        scores = torch.log_softmax(logits.float(), dim=-1)[:, cand]
        return torch.nn.functional.cross_entropy(scores, gold[idx])

    info.update(data="synthetic random ids; 2-way loss from the last position", batch=cfg.batch,
                padded_seq_len=seq, tokens_per_step=cfg.batch * seq)
    return loss_fn, cfg.batch


# ---- methods on one shared model ------------------------------------------------------------------

def _hybrid_config(name: str, cfg: BenchConfig) -> ho.HybridConfig:
    # Tiny learning rates: the weights barely move, so every round times the same computation.
    return ho.HybridConfig(lr_x=1e-9, lr_y=1e-9, mu=cfg.mu, seed=cfg.seed, direction=cfg.direction,
                           estimator=VARIANTS.get(name, "paired"),
                           fo_optimizer="adam" if name == "fo-full" else "sgd")


class Methods:
    """One :class:`~hybridopt.HybridOptimizer` per method (and the MeZO reference) over one model."""

    def __init__(self, wl: Workload, cfg: BenchConfig, names=STEP_ITEMS) -> None:
        self.wl, self.cfg = wl, cfg
        self.all_params = list({id(p): p for p in wl.model.parameters()}.values())
        self.blocks: dict[str, tuple[list, list]] = {}
        self.opts: dict[str, ho.HybridOptimizer] = {}
        problems: dict[str, ho.ModuleProblem] = {}
        for name in names:
            method = {**{v: "hybrid" for v in VARIANTS}, "mezo-reference": "zo-full", "inference": "zo-full"}.get(name, name)
            zo, fo = ho.split_blocks(method, wl.base, wl.adapter)
            self.blocks[name] = (zo, fo)
            if name in ("mezo-reference", "inference"):
                continue
            if method not in problems:          # the hybrid variants share one problem
                problems[method] = ho.ModuleProblem(wl.model, wl.loss_fn, zo, fo, n=wl.n)
            ctx = ho.SweepContext(chunk_elements=cfg.chunk_elements or CHUNK_ELEMENTS)
            self.opts[name] = ho.HybridOptimizer(problems[method], _hybrid_config(name, cfg), keep_zo_log=False,
                                                 context=ctx)
        self.problems = problems
        self.mezo = None
        if "mezo-reference" in names:
            zo, _ = self.blocks["mezo-reference"]
            self.mezo = MeZOReference(wl.model, wl.loss_fn, named_subset(wl.model, zo), lr=1e-9, eps=cfg.mu,
                                      seed=cfg.seed)
        self.last_stats: dict[str, Any] = {}

    def activate(self, name: str) -> None:
        """requires_grad as the method's core sets it (ZO: False, FO: True); drop every .grad."""
        zo, fo = self.blocks[name]
        for p in self.all_params:
            p.grad = None
            p.requires_grad_(False)
        for p in fo:
            p.requires_grad_(True)

    def run(self, name: str) -> None:
        self.activate(name)
        if name == "inference":
            with torch.no_grad():
                self.wl.loss_fn(self.wl.model, self.wl.batch)
        elif name == "mezo-reference":
            self.mezo.step(self.wl.batch)
        else:
            self.step(name)
        for p in self.all_params:
            p.grad = None

    def step(self, name: str, steady: bool = True):
        """One step of ``name``; with ``steady``, in a folded method's steady state: a primed
        pending update (zero coefficients) is applied inside the step's sweep, and the step's own
        pending update is dropped afterwards (the other items share the model)."""
        opt = self.opts[name]
        prob = opt.problem
        if steady and opt.fold and opt.zo_params:
            q = opt.config.q
            prob.set_pending(ZOUpdate(opt.rule, opt.rule_state, opt.zo_params, opt.directions(10 ** 9),
                                      torch.zeros((q,), dtype=opt.acc_dtype, device=opt.zo_params[0].device),
                                      0.0, 1.0))
        stats = opt.step(self.wl.batch)
        if steady and opt.fold:
            prob.pending = None          # dropped, not applied: lr 1e-9, and it would run inside the next item
            prob.flush()                 # (removes the flush hooks)
        self.last_stats[name] = stats
        return stats


# ---- timing helpers -------------------------------------------------------------------------------

def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def time_items(ms: Methods, cfg: BenchConfig, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    wl, dev = ms.wl, cfg.device
    zo_full = ms.opts["zo-full"]
    dirs = zo_full.directions(10 ** 6)
    pieces: dict[str, list[float]] = {}

    def forward():
        ms.activate("zo-full")
        with torch.no_grad():
            wl.loss_fn(wl.model, wl.batch)

    def paired_probe():
        ms.activate("zo-full")
        with torch.no_grad():
            zo_full.problem.pair_loss(wl.batch, ho.Pair(dirs, 0, cfg.mu))

    def update_sweep():
        ms.activate("zo-full")
        zero = torch.zeros((1,), dtype=zo_full.acc_dtype, device=dev)
        ZOUpdate(zo_full.rule, zo_full.rule_state, zo_full.zo_params, dirs, zero, 0.0, 1.0).finish()

    def weight_pass():
        with torch.no_grad():
            for p in zo_full.zo_params:
                p.mul_(1.0)   # x·1 = x exactly: one read and one write of every ZO weight

    def instrumented(name):
        def f():
            ctx = ms.opts[name].context
            ctx.timer = PhaseTimer(sync=(lambda: _sync(dev)) if str(dev).startswith("cuda") else None)
            try:
                ms.run(name)
                timer = ctx.timer
            finally:
                ctx.timer = None
            for phase in ("draw", "perturb", "update"):   # inclusive: an update's draws are in 'draw' too
                pieces.setdefault(f"zo_{phase}_s[{name}]", []).append(timer.seconds.get(phase, 0.0))
            pieces.setdefault(f"zo_pass_s[{name}]", []).append(timer.total)
        return f

    items: dict[str, Callable[[], None]] = {"forward": forward, "paired_probe": paired_probe,
                                            "update_sweep": update_sweep, "weight_pass": weight_pass}
    for name in STEP_ITEMS:
        items[f"step[{name}]"] = (lambda n=name: ms.run(n))
    for name in ZO_METHODS:
        items[f"instrumented[{name}]"] = instrumented(name)
    times: dict[str, list[float]] = {k: [] for k in items}
    cpu: dict[str, list[float]] = {k: [] for k in items}
    keys = list(items)
    for rnd in range(cfg.warmup + cfg.reps):
        k0 = rnd % len(keys)
        order = keys[k0:] + keys[:k0]
        for k in order:
            _sync(dev)
            t0, c0 = time.perf_counter(), time.process_time()
            items[k]()
            _sync(dev)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if rnd >= cfg.warmup:
                times[k].append(dt)
                cpu[k].append(dc)
        if rnd < cfg.warmup:
            pieces.clear()
        log(f"round {rnd + 1}/{cfg.warmup + cfg.reps}" + (" (warm-up)" if rnd < cfg.warmup else ""))
    return {"samples": {**times, **pieces}, "cpu_samples": cpu,
            "median": {k: _median(v) for k, v in {**times, **pieces}.items()},
            "cpu_median": {k: _median(v) for k, v in cpu.items()}}


# ---- memory ---------------------------------------------------------------------------------------

def _status_kb(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


#: glibc: a fixed mmap threshold (no dynamic raise) and trimming, so that freed tensors go back to the
#: OS at once and peak RSS tracks the peak of live allocations rather than heap fragmentation.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}


def _measure_item(cfg: BenchConfig, item: str) -> dict[str, Any]:
    gc.collect()
    baseline = _status_kb("VmRSS") * 1024
    wl = build_workload(cfg)
    ms = Methods(wl, cfg, names=(item,))
    gc.collect()
    before = _status_kb("VmRSS") * 1024
    reset = _reset_peak_rss()
    for _ in range(cfg.memory_steps):
        ms.run(item)
    peak = _status_kb("VmHWM") * 1024
    return {"item": item, "peak_bytes": peak - baseline, "rss_before_steps_bytes": before - baseline,
            "baseline_rss_bytes": baseline, "peak_reset": reset, "workload": wl.info}


def memory_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Subprocess body (CPU): import the libraries once, then measure each item in a forked child
    (fresh address space per item: build, reset peak RSS, run ``memory_steps``, report)."""
    cfg = BenchConfig(**{**spec["config"], "memory_items": tuple(spec["config"]["memory_items"])})
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    import hybridopt.benchmarks.scoring  # noqa: F401  (libraries loaded before the baseline)
    import hybridopt.benchmarks.tasks  # noqa: F401
    import peft  # noqa: F401
    import transformers  # noqa: F401
    import hybridopt.llm  # noqa: F401
    out = {}
    for item in spec["items"]:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                                   # child: no torch compute ran in the parent
            os.close(r)
            code = 0
            try:
                payload = json.dumps(_measure_item(cfg, item))
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                payload, code = json.dumps({"item": item, "error": f"{type(e).__name__}: {e}"}), 1
            with os.fdopen(w, "w") as fh:
                fh.write(payload)
            os._exit(code)
        os.close(w)
        with os.fdopen(r) as fh:
            data = fh.read()
        os.waitpid(pid, 0)
        res = json.loads(data) if data else {"item": item, "error": "worker died"}
        if "error" in res:
            raise RuntimeError(f"memory measurement of {item} failed: {res['error']}")
        out[item] = res
    return out


def measure_memory_subprocesses(cfg: BenchConfig, items=MEMORY_ITEMS, log=lambda s: None) -> dict[str, Any]:
    spec = json.dumps({"config": cfg.to_dict(), "items": list(items)})
    env = {**os.environ, **MALLOC_ENV}  # the worker imports the installed package, like the parent
    res = subprocess.run([sys.executable, "-m", "hybridopt.benchmarks.perf.bench", "--memory-worker", spec],
                         capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"memory worker failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for item, m in out.items():
        log(f"memory {item}: {m['peak_bytes'] / 2**20:.1f} MiB")
    return out


def measure_memory_cuda(ms: Methods, cfg: BenchConfig, items=MEMORY_ITEMS, log=lambda s: None) -> dict[str, Any]:
    out = {}
    order = [i for i in items if i != "fo-full"] + (["fo-full"] if "fo-full" in items else [])
    for item in order:
        ms.activate(item)
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        for _ in range(cfg.memory_steps):
            ms.run(item)
        torch.cuda.synchronize()
        out[item] = {"item": item, "peak_bytes": int(torch.cuda.max_memory_allocated()),
                     "allocated_before_steps_bytes": int(before)}
        log(f"memory {item}: {out[item]['peak_bytes'] / 2**20:.1f} MiB")
    return out


def analytic_memory(info: dict[str, Any], cfg: BenchConfig) -> dict[str, Any]:
    """Weights/gradients/optimizer-state bytes per method (activations excluded: a lower bound)."""
    b = 2 if cfg.dtype in ("bfloat16", "bf16", "float16", "fp16") else 4
    P, A, T = info["base_params"] + info["adapter_params"], info["adapter_params"], info["max_tensor_numel"]
    W = P * b
    T = min(T, CHUNK_ELEMENTS)               # large Linear/Embedding weights are probed in chunks
    tmp = T * (4 + b)                        # one fp32 direction + one perturbed tensor alive at a time
    est = {"inference": W,
           "zo-full": W + tmp, "zo-peft": W + A * (4 + b), "mezo-reference": W + 2 * T * b,
           "fo-peft": W + A * b,             # + adapter grads (SGD: no state)
           "hybrid": W + A * b + tmp,
           "fo-full": 4 * W}                 # weights + grads + AdamW exp_avg + exp_avg_sq (param dtype)
    return {"bytes": est, "note": "weights, gradients and optimizer state only; activations excluded",
            "hybrid_memory_over_fo_full": est["hybrid"] / est["fo-full"],
            "hybrid_memory_over_fo_peft": est["hybrid"] / est["fo-peft"],
            "zo_full_memory_over_inference": est["zo-full"] / est["inference"]}


# ---- profile ---------------------------------------------------------------------------------------

def profile_steps(ms: Methods, cfg: BenchConfig, names=("zo-full", "hybrid", "mezo-reference")) -> dict[str, Any]:
    """torch.profiler over one step per method, the core's phases labelled (``zo.draw``,
    ``zo.perturb``, ``zo.update``: the sweep context's phase timer); top ops by self time."""
    from torch.profiler import ProfilerActivity, profile, record_function

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cfg.device.startswith("cuda") else [])
    out: dict[str, Any] = {}
    for name in names:
        ms.run(name)                                   # warm
        loss_fns = {}
        for key, prob in ms.problems.items():
            loss_fns[key] = prob.loss_fn

            def lf(m, b, _f=prob.loss_fn):
                with record_function("loss.forward"):
                    return _f(m, b)
            prob.loss_fn = lf
        mezo_fwd = None
        if ms.mezo is not None:
            mezo_fwd = ms.mezo.loss_fn

            def mlf(m, b, _f=mezo_fwd):
                with record_function("loss.forward"):
                    return _f(m, b)
            ms.mezo.loss_fn = mlf
        ctx = ms.opts[name].context if name in ms.opts else None
        if ctx is not None:
            ctx.timer = PhaseTimer(around=record_function)
        try:
            with profile(activities=acts) as prof:
                with record_function("step"):
                    ms.run(name)
                _sync(cfg.device)
        finally:
            for key, prob in ms.problems.items():
                prob.loss_fn = loss_fns[key]
            if ms.mezo is not None:
                ms.mezo.loss_fn = mezo_fwd
            if ctx is not None:
                ctx.timer = None
        ev = prof.key_averages()
        total = {e.key: e.cpu_time_total / 1e6 for e in ev}
        self_t = sorted(((e.key, e.self_cpu_time_total / 1e6, e.count) for e in ev), key=lambda x: -x[1])
        step_s = total.get("step", float("nan"))
        labels = {k: total.get(k, 0.0) for k in ("loss.forward", "zo.draw", "zo.perturb", "zo.update")}
        # torch's own RNG ops (the MeZO reference's); the compiled direction kernel (hybridopt.counter)
        # is a ctypes call: its time is the self time of the zo.draw / zo.perturb labels
        gen = sum(t for k, t, _ in self_t if k in ("aten::normal_", "aten::randn", "aten::normal", "aten::bernoulli_",
                                                     "aten::random_"))
        mm = sum(t for k, t, _ in self_t if k in ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul",
                                                    "aten::_scaled_dot_product_flash_attention_for_cpu",
                                                    "aten::baddbmm"))
        out[name] = {"step_s": step_s, "labelled_s": labels, "rng_generation_self_s": gen, "matmul_self_s": mm,
                     "top_ops_self_s": [[k, round(t, 6), c] for k, t, c in self_t[:15]]}
        if cfg.device.startswith("cuda"):
            dev_t = sorted(((e.key, getattr(e, "self_device_time_total", 0.0) / 1e6, e.count) for e in ev),
                           key=lambda x: -x[1])
            out[name]["top_ops_self_device_s"] = [[k, round(t, 6), c] for k, t, c in dev_t[:15]]
            out[name]["device_time_s"] = sum(t for _, t, _ in dev_t)
    return out


# ---- the benchmark --------------------------------------------------------------------------------

def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b and math.isfinite(a) and math.isfinite(b) else float("nan")


def _machine(cfg: BenchConfig) -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    git = {}
    for key, cmd in (("commit", ["git", "rev-parse", "HEAD"]), ("core_diff", ["git", "diff", "--stat", "--", "hybridopt"])):
        try:
            git[key] = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=10).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            git[key] = None
    m = {"git": git, "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
         "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
         # which implementation drew the directions (hybridopt.counter): the compiled CPU kernel or the torch reference
         "direction_kernel": "compiled" if counter.kernel() is not None else f"torch reference ({counter.why_not()})"}
    if cfg.device.startswith("cuda") and torch.cuda.is_available():
        m["gpu"] = torch.cuda.get_device_name()
    try:
        m["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return m


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Measure everything; returns the ``bench.json`` dictionary (nothing written)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    machine = _machine(cfg)
    memory: dict[str, Any] = {}
    mem_method = None
    if cfg.memory and not cfg.device.startswith("cuda"):
        mem_method = ("CPU: one forked process per item; peak RSS (VmHWM, reset via /proc/self/clear_refs after the "
                      "build) minus RSS before the model was built; weights included; glibc "
                      + " ".join(f"{k}={v}" for k, v in MALLOC_ENV.items()) + " so freed tensors are returned")
        memory = measure_memory_subprocesses(cfg, items=cfg.memory_items, log=log)
        if cfg.memory_only:
            info = next(iter(memory.values()))["workload"]
            return _assemble(cfg, machine, info, memory, mem_method, None, {}, t_start)
    wl = build_workload(cfg)
    log(f"model {cfg.model}: {wl.info['base_params']:,} base + {wl.info['adapter_params']:,} adapter params, "
        f"batch {cfg.batch} x {wl.info['padded_seq_len']} tokens")
    ms = Methods(wl, cfg, names=STEP_ITEMS + ("inference",))
    if cfg.memory and cfg.device.startswith("cuda"):
        mem_method = ("CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats, in-process, "
                      "weights included, fo-full measured last")
        memory = measure_memory_cuda(ms, cfg, items=cfg.memory_items, log=log)
    timing = None if cfg.memory_only else time_items(ms, cfg, log=log)
    res = _assemble(cfg, machine, wl.info, memory, mem_method, timing, ms.last_stats, t_start)
    if cfg.profile and not cfg.memory_only:
        res["profile"] = profile_steps(ms, cfg)
    res["seconds_total"] = time.perf_counter() - t_start
    return res


def _counts(stats) -> dict[str, float] | None:
    if stats is None:
        return None
    return {"zo_draws_per_step": stats.zo_draws, "zo_weight_writes_per_step": stats.zo_writes,
            "zo_weight_passes_per_step": stats.zo_passes, "zo_row_draws_per_step": stats.zo_row_draws,
            "zo_row_reads_per_step": stats.zo_row_reads}


def round_ratios(samples: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """:data:`TIME_RATIOS` in every timed round, their median, and their mean with its 95%
    Student-t interval over the rounds (``paper_figures.derive.interval``)."""
    from hybridopt.paper_figures.derive import interval

    rounds = min(len(v) for v in samples.values()) if samples else 0
    by_round = [{k: v[i] for k, v in samples.items()} for i in range(rounds)]
    out: dict[str, dict[str, Any]] = {}
    for name, ratio in TIME_RATIOS.items():
        values = [ratio(r) for r in by_round]
        iv = interval(values)
        out[name] = {"values": values, "median": _median(values), "mean": iv.mean, "ci95": [iv.lo, iv.hi]}
    return out


def goals_for(direction: str) -> dict[str, tuple[str, float]]:
    return {**GOALS, **GOALS_BY_DIRECTION.get(direction, {})}


def _assemble(cfg, machine, info, memory, mem_method, timing, last_stats, t_start) -> dict[str, Any]:
    nan = float("nan")
    med = timing["median"] if timing else {}
    for k in ["forward", "paired_probe", "update_sweep", "weight_pass"] + [f"step[{n}]" for n in STEP_ITEMS]:
        med.setdefault(k, nan)
    F = med["forward"]
    tokens = info["tokens_per_step"]
    methods: dict[str, Any] = {}
    for name in STEP_ITEMS:
        st = med[f"step[{name}]"]
        counts = _counts(last_stats.get(name)) if name != "mezo-reference" else {
            "zo_draws_per_step": 4.0, "zo_weight_writes_per_step": 4.0, "zo_weight_passes_per_step": 4.0}
        methods[name] = {
            "step_s": st, "forward_s": F,
            "zo_pass_s": med.get(f"zo_pass_s[{name}]", 0.0 if name.startswith("fo") else None),
            **(counts or {}),
            "peak_memory_bytes": memory.get(name, {}).get("peak_bytes"),
            "tokens_per_s": _ratio(tokens, st),
        }
    pieces = {"forward_s": F, "paired_probe_s": med["paired_probe"], "update_sweep_s": med["update_sweep"],
              "weight_pass_s": med["weight_pass"],
              **{k: v for k, v in med.items() if k.startswith("zo_")}}
    zo_pass = med.get("zo_pass_s[zo-full]", nan)
    inf_mem = memory.get("inference", {}).get("peak_bytes")
    zo_counts = _counts(last_stats.get("zo-full")) or {}

    def mem_ratio(a, b):
        ma, mb = memory.get(a, {}).get("peak_bytes"), memory.get(b, {}).get("peak_bytes")
        return _ratio(ma, mb) if ma and mb else None

    ratios = {
        "hybrid_step_over_floor": TIME_RATIOS["hybrid_step_over_floor"](med),
        "weight_pass_over_floor": _ratio(med["weight_pass"], med["step[fo-peft]"] + 2 * F),
        "hybrid_step_over_fo_peft_step": _ratio(med["step[hybrid]"], med["step[fo-peft]"]),
        "hybrid_step_over_fo_full_step": _ratio(med["step[hybrid]"], med["step[fo-full]"]),
        "hybrid_paired_over_central_step": _ratio(med["step[hybrid]"], med["step[hybrid-central]"]),
        "hybrid_reuse_step_over_floor": _ratio(med["step[hybrid-forward]"], med["step[fo-peft]"] + F),
        "zo_step_over_two_forwards": TIME_RATIOS["zo_step_over_two_forwards"](med),
        "zo_step_over_mezo_reference": TIME_RATIOS["zo_step_over_mezo_reference"](med),
        "paired_probe_over_two_forwards": _ratio(med["paired_probe"], 2 * F),
        "zo_pass_time_over_two_forwards": _ratio(zo_pass, 2 * F),
        "update_sweep_over_two_forwards": _ratio(med["update_sweep"], 2 * F),
        "weight_pass_over_two_forwards": _ratio(med["weight_pass"], 2 * F),
        "zo_draws_per_step": zo_counts.get("zo_draws_per_step"),
        "zo_weight_writes_per_step": zo_counts.get("zo_weight_writes_per_step"),
        "zo_weight_passes_per_step": zo_counts.get("zo_weight_passes_per_step"),
        "mezo_reference_passes_per_step": PASSES_PER_STEP,
        "hybrid_memory_over_fo_peft": mem_ratio("hybrid", "fo-peft"),
        "zo_full_memory_over_inference": mem_ratio("zo-full", "inference") if inf_mem else None,
        "hybrid_memory_over_fo_full": mem_ratio("hybrid", "fo-full"),
    }
    cm = timing.get("cpu_median", {}) if timing else {}
    cpu_ratios = {}
    if cm:
        Fc = cm["forward"]
        cpu_ratios = {
            "hybrid_step_over_floor": TIME_RATIOS["hybrid_step_over_floor"](cm),
            "hybrid_step_over_fo_peft_step": _ratio(cm["step[hybrid]"], cm["step[fo-peft]"]),
            "hybrid_reuse_step_over_floor": _ratio(cm["step[hybrid-forward]"], cm["step[fo-peft]"] + Fc),
            "zo_step_over_two_forwards": TIME_RATIOS["zo_step_over_two_forwards"](cm),
            "zo_step_over_mezo_reference": TIME_RATIOS["zo_step_over_mezo_reference"](cm),
            "paired_probe_over_two_forwards": _ratio(cm["paired_probe"], 2 * Fc),
            "update_sweep_over_two_forwards": _ratio(cm["update_sweep"], 2 * Fc),
        }
    goals = {}
    for k, (op, bound) in goals_for(cfg.direction).items():
        v = ratios.get(k)
        met = None if v is None or (isinstance(v, float) and not math.isfinite(v)) else (
            v <= bound + 1e-12 if op == "<=" else v < bound)
        goals[k] = {"goal": f"{op} {bound}", "value": v, "met": met}
    result = {
        "schema": SCHEMA, "config": cfg.to_dict(), "machine": machine, "workload": info,
        "definitions": {
            "step_s": "median wall time of one optimizer step (interleaved rounds after warm-up; folded methods "
                      "in their steady state: the previous step's update applied inside the step's sweep)",
            "forward_s": "median wall time of one plain no-grad forward (loss) of the same model and batch",
            "paired_probe_s": "f(x+mu u) and f(x-mu u) of the zo-full block in one doubled-batch forward",
            "update_sweep_s": "one standalone update sweep over the zo-full block (regenerate u, write)",
            "weight_pass_s": "one in-place pass over the zo-full block (x.mul_(1.0): every ZO weight read and "
                             "written once, values unchanged): the least memory traffic of a folded step's update",
            "weight_pass_over_floor": "weight_pass / (step[fo-peft] + 2*forward): the part of the floor one pass "
                                      "over the ZO block's memory costs (hybrid_step_over_floor - 1 cannot be "
                                      "smaller while the weights are updated in memory the matmuls do not touch)",
            "zo_pass_s": "the sweep context's phase timer in an instrumented step: time drawing directions, "
                         "forming p +- mu u, and applying the update (each second counted once; not the matmuls)",
            "zo_draws_per_step": "StepStats.zo_draws of a zo-full step: direction elements drawn / ZO block size "
                                 "(embedding lookups apart: zo_row_draws_per_step); MeZO reference: 4",
            "zo_weight_writes_per_step": "StepStats.zo_writes: ZO weight elements written / ZO block size",
            "zo_weight_passes_per_step": "StepStats.zo_passes: ZO weight elements read or written whole by the ZO "
                                         "machinery / ZO block size (lookups apart); MeZO reference: 4",
            "hybrid_step_over_floor": "step[hybrid] / (step[fo-peft] + 2*forward)",
            "hybrid_reuse_step_over_floor": "step[hybrid, estimator=forward] / (step[fo-peft] + forward)",
            "zo_step_over_two_forwards": "step[zo-full] / (2*forward)",
            "zo_pass_time_over_two_forwards": "zo_pass_s[zo-full] / (2*forward_s)",
            "zo_step_over_mezo_reference": "step[zo-full] / step[mezo-reference]",
            "memory": mem_method,
            "tokens_per_s": "tokens in the mini-batch (unpadded) / step_s",
            "round_ratios": "the goals' time ratios within each timed round (its items run seconds apart), their "
                            "median, and their mean with its 95% Student-t interval over the rounds",
            "cpu_time_ratios": "the same ratios from process CPU time (time.process_time) of the same rounds: "
                               "robust to other processes' load; equals work when --threads 1",
        },
        "methods": methods, "pieces": pieces, "ratios": ratios, "goals": goals,
        "round_ratios": round_ratios(timing["samples"]) if timing else {},
        "cpu_time_ratios": cpu_ratios, "cpu_time_median_s": cm,
        "memory": {k: {kk: vv for kk, vv in v.items() if kk != "workload"} for k, v in memory.items()},
        "analytic_memory": analytic_memory(info, cfg),
        "timing_samples": timing["samples"] if timing else None,
        "seconds_total": time.perf_counter() - t_start,
    }
    return result


def markdown(res: dict[str, Any]) -> str:
    w = res["workload"]
    lines = [f"# hybridopt bench: {w['model']} ({w['dtype']}, {w['device']}), batch {w['batch']} x "
             f"{w['padded_seq_len']} tokens", "",
             ("Memory only (no timing). " if res["config"]["memory_only"] else
              f"{res['config']['reps']} interleaved rounds after {res['config']['warmup']} warm-up; medians. ")
             + f"ZO directions: {res['config']['direction']}. Memory: {res['definitions']['memory']}.", "",
             "| method | step (s) | forward (s) | ZO machinery (s) | draws / writes / passes per step | "
             "peak memory (MiB) | tokens/s |",
             "|---|---|---|---|---|---|---|"]

    def f(v, fmt="{:.4f}"):
        return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)

    for name, m in res["methods"].items():
        mem = m["peak_memory_bytes"]
        dwp = " / ".join(f(m.get(k), "{:.2f}") for k in ("zo_draws_per_step", "zo_weight_writes_per_step",
                                                           "zo_weight_passes_per_step"))
        lines.append(f"| {name} | {f(m['step_s'])} | {f(m['forward_s'])} | {f(m['zo_pass_s'])} | {dwp} | "
                     f"{f(mem / 2**20 if mem else None, '{:.1f}')} | {f(m['tokens_per_s'], '{:.1f}')} |")
    if "inference" in res["memory"]:
        lines.append(f"| inference | — | {f(res['pieces']['forward_s'])} | — | — | "
                     f"{res['memory']['inference']['peak_bytes'] / 2**20:.1f} | — |")
    lines += ["", "| ratio | value | goal | met |", "|---|---|---|---|"]
    for k, v in res["ratios"].items():
        g = res["goals"].get(k, {})
        lines.append(f"| {k} | {f(v, '{:.3f}') if not isinstance(v, int) else v} | {g.get('goal', '')} | "
                     f"{'' if g.get('met') is None else ('yes' if g['met'] else 'no')} |")
    if res.get("round_ratios"):
        lines += ["", "Round by round (the ratio within each timed round; mean with its 95% Student-t interval):", "",
                  "| ratio | per round | median | mean [95% interval] | goal |", "|---|---|---|---|---|"]
        for k, r in res["round_ratios"].items():
            lo, hi = r["ci95"]
            ci = f" [{f(lo, '{:.3f}')}, {f(hi, '{:.3f}')}]" if lo is not None else ""
            lines.append(f"| {k} | {' '.join(f(v, '{:.3f}') for v in r['values'])} | {f(r['median'], '{:.3f}')} | "
                         f"{f(r['mean'], '{:.3f}')}{ci} | {res['goals'].get(k, {}).get('goal', '')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # memory worker entry point (subprocess)
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-worker":
        print(json.dumps(memory_worker(json.loads(sys.argv[2]))))
        sys.exit(0)
    print("usage: python -m hybridopt.benchmarks.perf.bench --memory-worker SPEC_JSON (use `hybridopt bench`)", file=sys.stderr)
    sys.exit(2)
