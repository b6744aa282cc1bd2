"""``result.json``: the record of one fine-tuning run, as one versioned schema.

The runner (:mod:`benchmarks.runner`) builds a :class:`RunResult` and writes ``to_dict()``; the
figures and the report read the files back with :func:`load` (or
:meth:`RunResult.from_dict`), never by ad-hoc keys of their own.  The JSON keys are the field
names below, nested as the dataclasses nest, so a dotted key such as ``dev_metric.best`` or
``stationarity.fo_grad_sq`` names one field (the report's ledger traces numbers by such keys).

Versions (``schema``):

* ``hybridopt.result/1`` — files without a ``schema`` key (before the study): no ``step_seconds``,
  no ``changes``; read with those empty.
* ``hybridopt.result/2`` — adds ``schema``, ``step_seconds`` (the wall time of every training
  step) and ``changes`` (per-step predicted loss change by block, :class:`Changes`).

Per-step lists (``train_loss_curve``, ``step_seconds``, every list of :class:`Stationarity` and
:class:`Changes`) are aligned: entry ``t`` (0-based) belongs to training step ``t + 1``.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "hybridopt.result/2"
SCHEMAS = ("hybridopt.result/1", SCHEMA)


class SchemaError(ValueError):
    """A result file that does not follow the schema (names the file and the field)."""


@dataclass
class DevMetric:
    """The dev metric of the selected checkpoint: the task's metric ``name`` (accuracy, or the
    target loss of an SFT task), its best value, the step it was reached at (earliest on ties)."""

    name: str
    best: float
    step: int
    higher_is_better: bool = True


@dataclass
class BestAccuracy:
    """``dev_metric`` again, for accuracy tasks (kept for readers of the first schema)."""

    best: float
    step: int


@dataclass
class Stationarity:
    """Per-step proxies of the stationarity measure of L6(A) (one entry per training step).

    * ``epoch[t]`` — the reshuffling epoch the step's mini-batch came from;
    * ``fo_grad_sq[t]`` — ‖∇ᵧf_B(z_t)‖², exact (autograd, FO block y, before its update); empty
      without an FO block;
    * ``zo_grad_sq_est[t]`` — mean_r g_r² with g_r = [f_B(x+μu_r, y) − f_B(x−μu_r, y)]/(2μ):
      for Gaussian u_r, E[g_r²] = ‖∇ₓf_B‖² + O(μ²) (ZO block x); empty without a ZO block;
    * ``zo_curvature[t]`` — mean_r c_r, c_r = [f_B(x+μu_r) + f_B(x−μu_r) − 2f_B(x)]/μ² =
      u_rᵀ∇²ₓf_B u_r + O(μ²) (when f_B(x) was evaluated: central estimators with an FO block);
    * ``zo_dim`` — d_x, the number of ZO elements; ``mu`` — μ.
    """

    epoch: list[int] = field(default_factory=list)
    fo_grad_sq: list[float] = field(default_factory=list)
    zo_grad_sq_est: list[float] = field(default_factory=list)
    zo_curvature: list[float] = field(default_factory=list)
    zo_dim: int = 0
    mu: float = 0.0


@dataclass
class Changes:
    """Per step t: the change of the step's own mini-batch loss f_B predicted for each block's
    update of that step (both blocks read z_t, so the two predictions add up to the step's
    first-order change).  Empty lists where a block is absent or the value was not recorded.

    * ``zo_first[t]`` = −η_x (1/q) Σ_r g_r², the first-order prediction of the ZO update
      x_{t+1} − x_t = −(η_x/q) Σ_r g_r u_r (g_r estimates ⟨∇ₓf_B, u_r⟩; SGD rule only);
    * ``zo_second[t]`` = ``zo_first[t]`` + ½ (η_x/q)² Σ_r g_r² c_r: the quadratic model of f_B along
      each direction, from the step's own probes (c_r as in :class:`Stationarity`).  The cross
      terms u_rᵀ∇²ₓf u_s (r ≠ s) are dropped, so it is exact for q = 1 up to O(μ²) and third-order
      terms in the step length η_x|g_r|;
    * ``fo_first[t]`` = ⟨∇ᵧf_B, y_{t+1} − y_t⟩, the exact first-order prediction of the FO update
      (any FO optimizer; recorded when the FO block is the adapter).
    """

    zo_first: list[float] = field(default_factory=list)
    zo_second: list[float] = field(default_factory=list)
    fo_first: list[float] = field(default_factory=list)


@dataclass
class OracleCalls:
    """Loss evaluations of the ZO block and gradients of the FO block (per example), and the ZO
    sweep's work per step in units of the ZO block's size (medians over the steps after the first)."""

    zo_evals: int = 0
    fo_grads: int = 0
    zo_draws_per_step: float = 0.0
    zo_weight_writes_per_step: float = 0.0
    zo_weight_passes_per_step: float = 0.0


@dataclass
class Sizes:
    train: int
    dev: int
    test: int
    steps_per_epoch: int
    zo_params: int
    fo_params: int


@dataclass
class Seeds:
    """The run's seed and what it fixes: the sampler's permutations, the ZO directions and the
    adapter's initialisation (so two methods of one seed use common random numbers)."""

    seed: int
    sampler: int
    zo_directions: int
    adapter_init: int


@dataclass
class Timing:
    """Seconds: the whole run (load, evaluations, test), the training steps, the dev evaluations."""

    wall_seconds: float
    train_seconds: float
    eval_seconds: float


@dataclass
class Machine:
    platform: str
    processor: str
    cpu_threads: int
    device: str


@dataclass
class RunResult:
    """One run: what was run (``config``: the merged configuration), what it measured, and on what.

    ``dev_curve`` holds ``[step, dev metric]`` at every evaluation (step 0 = zero-shot);
    ``train_loss_curve`` ``[step, f_B]`` per step; ``test_metric`` is computed once, on the checkpoint
    selected by the dev metric.  ``seconds_per_step`` is the median of ``step_seconds``;
    ``peak_memory_bytes`` the process peak (resident set on CPU, ``max_memory_allocated`` on CUDA).
    """

    task: str
    method: str
    model: str
    steps: int
    metric: str
    dev_metric: DevMetric
    test_metric: float | None
    dev_accuracy: BestAccuracy | None
    test_accuracy: float | None
    zero_shot_dev_accuracy: float | None
    train_loss_curve: list[list[float]]
    dev_curve: list[list[float]]
    seconds_per_step: float | None
    peak_memory_bytes: int
    tokens_per_second: float | None
    stationarity: Stationarity
    oracle_calls: OracleCalls
    sizes: Sizes
    communication: dict[str, Any] | None
    seeds: Seeds
    timing: Timing
    config: dict[str, Any]
    git_commit: str | None
    versions: dict[str, str]
    machine: Machine
    step_seconds: list[float] = field(default_factory=list)
    changes: Changes = field(default_factory=Changes)
    export: dict[str, Any] | None = None
    grid: dict[str, Any] | None = None
    #: checkpoints, resume, selection, warnings and the collapse flag (benchmarks.runner; free-form)
    reliability: dict[str, Any] | None = None
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``result.json`` (``schema`` first; ``export``/``grid`` only when set)."""
        d = dataclasses.asdict(self)
        out = {"schema": d.pop("schema")}
        out.update(d)
        for k in ("export", "grid", "reliability"):
            if out[k] is None:
                del out[k]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "result") -> "RunResult":
        """Read a result object of any version in :data:`SCHEMAS`; an unknown version or key, or a
        missing field, raises :class:`SchemaError` naming ``where`` and the field."""
        version = d.get("schema", SCHEMAS[0])
        if version not in SCHEMAS:
            raise SchemaError(f"{where}: unknown schema {version!r} (known: {', '.join(SCHEMAS)})")
        return _build(cls, {**d, "schema": version}, where)

    @property
    def higher_is_better(self) -> bool:
        return self.dev_metric.higher_is_better


#: the nested dataclass of a field (the rest are plain JSON values)
_NESTED = {"dev_metric": DevMetric, "dev_accuracy": BestAccuracy, "stationarity": Stationarity,
           "oracle_calls": OracleCalls, "sizes": Sizes, "seeds": Seeds, "timing": Timing, "machine": Machine,
           "changes": Changes}


#: a run *diverged* when some step's training loss exceeds this many times its first step's (or is not finite)
DIVERGE_FACTOR = 10.0


def diverged_at(losses: list[float], factor: float = DIVERGE_FACTOR) -> int | None:
    """The first step (1-based) whose loss is not finite or exceeds ``factor`` × the first step's; None if
    none (used by ``hybridopt lr-scan`` to stop a probe and by the report to count diverged seeds)."""
    for t, v in enumerate(losses, start=1):
        if not math.isfinite(v) or v > factor * losses[0]:
            return t
    return None


def _build(cls, d: dict[str, Any], where: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise SchemaError(f"{where}: unknown field(s) {', '.join(unknown)} in {cls.__name__}")
    kw = {}
    for name, f in names.items():
        if name not in d:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SchemaError(f"{where}: missing field {name!r} of {cls.__name__}")
            continue
        v = d[name]
        sub = _NESTED.get(name) if cls is RunResult else None
        if sub is not None and v is not None:
            if not isinstance(v, dict):
                raise SchemaError(f"{where}: field {name!r} must be an object, got {type(v).__name__}")
            v = _build(sub, v, f"{where}: {name}")
        kw[name] = v
    return cls(**kw)


def load(path: str | Path) -> RunResult:
    """A ``result.json`` file as a :class:`RunResult`."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise SchemaError(f"{p}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict):
        raise SchemaError(f"{p}: must hold a JSON object")
    return RunResult.from_dict(data, where=str(p))
