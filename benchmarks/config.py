"""Fine-tuning run configuration: defaults file + per-method defaults + experiment overrides.

Merging order (later wins): ``configs/defaults.json`` → its ``method_defaults[method]`` (optimizer
options) → an experiment file → command-line options.  Everything is validated *before* any
model or data is loaded, and every error names the offending field.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from hybridopt import HybridConfig, methods
from hybridopt.methods import METHODS

from .tasks import BUILTIN

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULTS_FILE = CONFIG_DIR / "defaults.json"
PEFT_KINDS = ("lora", "prefix", "config")
PEFT_KEYS = ("kind", "r", "alpha", "target_modules", "num_virtual_tokens", "config_path")
DEVICES = ("cpu", "cuda")


class ConfigError(ValueError):
    """A configuration problem, reported as one line (exit code 2)."""


@dataclass
class FinetuneConfig:
    task: str
    method: str
    model: str = "smollm2-135m"
    dtype: str = "float32"
    device: str = "cpu"
    peft: dict[str, Any] = field(default_factory=lambda: {"kind": "lora", "r": 8, "alpha": 16,
                                                          "num_virtual_tokens": 5, "config_path": None})
    steps: int = 40
    batch_size: int = 16
    eval_every: int = 10
    eval_batch_size: int = 32
    n_train: int | None = None
    n_dev: int | None = 200
    n_test: int | None = None
    max_length: int = 160
    #: cut prompts longer than ``max_length`` from the left (else such a prompt is a configuration error)
    truncate_prompts: bool = False
    checkpoint_every: int = 0
    seed: int = 0
    data_dir: str | None = None
    optimizer: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_task(self):
        """The :class:`~benchmarks.tasks.Task` named by ``task`` (built-in name or task file)."""
        from .tasks import load_task
        return load_task(self.task)

    @property
    def uses_peft(self) -> bool:
        return methods.get(self.method).uses_adapter

    def hybrid_config(self) -> HybridConfig:
        opts = dict(self.optimizer)
        opts.setdefault("seed", self.seed)
        if opts.get("schedule", "constant") != "constant":
            opts.setdefault("total_steps", self.steps)
        return HybridConfig.from_dict(opts)


def _int(name: str, v: Any, lo: int, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ConfigError(f"{name} must be an integer >= {lo}{' or null' if allow_none else ''}, got {v!r}")


def check_device(device: str) -> None:
    """A CUDA device must exist in this torch build and on this machine (checked by the run, not by
    :func:`validate`: a configuration may be planned here and run elsewhere)."""
    import torch

    if device == "cpu":
        return
    if not torch.backends.cuda.is_built():
        raise ConfigError(f"device {device!r} is not available: this torch is built without CUDA (CPU only); "
                          "use --device cpu or install a CUDA build of torch")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if index >= n:
        raise ConfigError(f"device {device!r} is not available: {n} CUDA device(s) visible"
                          + ("" if n else " (check the driver and CUDA_VISIBLE_DEVICES)"))


def validate(cfg: FinetuneConfig) -> FinetuneConfig:
    """Check every field (types, ranges, names, paths, consistency); raise :class:`ConfigError`."""
    from .tasks import TaskError
    from hybridopt.llm.models import DTYPES, check_model_source

    if not isinstance(cfg.task, str) or not cfg.task:
        raise ConfigError(f"task must be a built-in task name or a task file, got {cfg.task!r}")
    try:
        cfg.load_task()
    except TaskError as e:
        raise ConfigError(str(e)) from None
    if cfg.method not in METHODS:
        raise ConfigError(f"unknown method {cfg.method!r}; valid methods: {', '.join(METHODS)}")
    if not isinstance(cfg.model, str) or not cfg.model:
        raise ConfigError(f"model must be a preset name, a Hugging Face id or a directory, got {cfg.model!r}")
    try:   # a directory that transformers can read, a Hugging Face id in the local cache
        check_model_source(cfg.model, cached=False)   # the cache is checked by the run (runner.run)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {cfg.dtype!r}; valid: {', '.join(DTYPES)}")
    if not isinstance(cfg.device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", cfg.device):
        raise ConfigError(f"unknown device {cfg.device!r}; valid: cpu, cuda, cuda:N")
    if not isinstance(cfg.peft, dict):
        raise ConfigError(f"peft must be an object, got {cfg.peft!r}")
    unknown = sorted(set(cfg.peft) - set(PEFT_KEYS))
    if unknown:
        raise ConfigError(f"unknown peft option(s): {', '.join(unknown)}; valid: {', '.join(PEFT_KEYS)}")
    kind = cfg.peft.get("kind", "lora")
    if kind not in PEFT_KINDS:
        raise ConfigError(f"unknown peft kind {kind!r}; valid: {', '.join(PEFT_KINDS)}")
    if kind == "config":
        cp = cfg.peft.get("config_path")
        if not cp:
            raise ConfigError("peft kind 'config' needs peft.config_path (a peft config JSON file)")
        if not Path(cp).is_file():
            raise ConfigError(f"peft config file {cp!r} does not exist")
        try:
            json.loads(Path(cp).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"peft config file {cp!r} is not readable JSON ({e})") from None
    _int("peft.r", cfg.peft.get("r", 8), 1)
    tm = cfg.peft.get("target_modules")
    if tm is not None and (not isinstance(tm, list) or not tm or not all(isinstance(t, str) and t for t in tm)):
        raise ConfigError(f"peft.target_modules must be a non-empty list of module names, got {tm!r}")
    if not isinstance(cfg.peft.get("alpha", 16), (int, float)) or cfg.peft.get("alpha", 16) <= 0:
        raise ConfigError(f"peft.alpha must be > 0, got {cfg.peft.get('alpha')!r}")
    _int("peft.num_virtual_tokens", cfg.peft.get("num_virtual_tokens", 5), 1)
    _int("steps", cfg.steps, 1)
    _int("batch_size", cfg.batch_size, 1)
    _int("eval_every", cfg.eval_every, 1)
    _int("eval_batch_size", cfg.eval_batch_size, 1)
    _int("n_train", cfg.n_train, 1, allow_none=True)
    _int("n_dev", cfg.n_dev, 1, allow_none=True)
    _int("n_test", cfg.n_test, 1, allow_none=True)
    _int("max_length", cfg.max_length, 8)
    if not isinstance(cfg.truncate_prompts, bool):
        raise ConfigError(f"truncate_prompts must be true or false, got {cfg.truncate_prompts!r}")
    _int("checkpoint_every", cfg.checkpoint_every, 0)
    _int("seed", cfg.seed, 0)
    if cfg.data_dir is not None and not Path(cfg.data_dir).is_dir():
        raise ConfigError(f"data_dir {cfg.data_dir!r} is not a directory")
    if not isinstance(cfg.optimizer, dict):
        raise ConfigError(f"optimizer must be an object, got {cfg.optimizer!r}")
    try:
        cfg.hybrid_config()
    except ValueError as e:
        raise ConfigError(f"optimizer: {e}") from None
    if cfg.n_train is not None and cfg.batch_size > cfg.n_train:
        raise ConfigError(f"batch_size={cfg.batch_size} exceeds n_train={cfg.n_train}")
    return cfg


def _read_json(path: str | os.PathLike, what: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r} does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{what} {str(p)!r} is not valid JSON: line {e.lineno}: {e.msg}") from None
    except OSError as e:
        raise ConfigError(f"{what} {str(p)!r} cannot be read: {e.strerror}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {str(p)!r} must hold a JSON object")
    return data


_FIELDS = {f.name for f in fields(FinetuneConfig)}


def _merge(base: dict[str, Any], over: Mapping[str, Any], origin: str) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if key not in _FIELDS:
            raise ConfigError(f"{origin}: unknown key {key!r}; valid keys: {', '.join(sorted(_FIELDS))}")
        if key in ("peft", "optimizer") and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def build_config(task: str | None = None, method: str | None = None, config_file: str | None = None,
                 overrides: Mapping[str, Any] | None = None) -> FinetuneConfig:
    """Merge defaults, method defaults, an experiment file and overrides; validate."""
    defaults = _read_json(DEFAULTS_FILE, "defaults file")
    method_defaults = defaults.pop("method_defaults", {})
    merged = _merge({}, defaults, str(DEFAULTS_FILE))
    exp = _read_json(config_file, "config file") if config_file else {}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    chosen = overrides.get("method", exp.get("method", method))
    if chosen in method_defaults:
        merged = _merge(merged, {"optimizer": method_defaults[chosen]}, "method defaults")
    merged = _merge(merged, exp, f"config file {config_file!r}")
    merged = _merge(merged, {k: v for k, v in {"task": task, "method": method}.items() if v is not None},
                    "command line")
    merged = _merge(merged, overrides, "command line")
    for key in ("task", "method"):
        if key not in merged:
            raise ConfigError(f"no {key} given (use --{key} or put it in the config file)")
    if isinstance(merged.get("task"), str) and merged["task"] not in BUILTIN and Path(merged["task"]).exists():
        merged["task"] = str(Path(merged["task"]).expanduser().resolve())  # a run records where its task file is
    cfg = validate(FinetuneConfig(**merged))
    check_consistency(cfg, {**exp.get("optimizer", {}), **overrides.get("optimizer", {})},
                       {**exp.get("peft", {}), **overrides.get("peft", {})})
    return cfg


ZO_OPTIONS = ("lr_x", "mu", "q", "estimator", "direction", "weight_decay_x", "zo_rule", "zo_momentum")
FO_OPTIONS = ("lr_y", "fo_optimizer", "momentum", "betas", "adam_eps", "weight_decay_y")


def check_consistency(cfg: FinetuneConfig, given_opt: Mapping[str, Any], given_peft: Mapping[str, Any]) -> None:
    """Options the user set explicitly must apply to the chosen method."""
    m = methods.get(cfg.method)
    has_zo, has_fo = m.has_zo, m.has_fo
    if not has_zo and (bad := [k for k in ZO_OPTIONS if k in given_opt]):
        raise ConfigError(f"method {cfg.method!r} has no zeroth-order block; option(s) {', '.join(bad)} do not apply")
    if not has_fo and (bad := [k for k in FO_OPTIONS if k in given_opt]):
        raise ConfigError(f"method {cfg.method!r} has no first-order block; option(s) {', '.join(bad)} do not apply")
    if not cfg.uses_peft and given_peft:
        raise ConfigError(f"method {cfg.method!r} uses no PEFT module; peft option(s) "
                          f"{', '.join(sorted(given_peft))} do not apply")
    kind = cfg.peft.get("kind", "lora")
    for key, what in (("r", "r (LoRA rank)"), ("alpha", "alpha (LoRA scaling)"), ("target_modules", "target_modules")):
        if key in given_peft and kind != "lora":
            raise ConfigError(f"peft option {what} given with peft kind {kind!r}")
