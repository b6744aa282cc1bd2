"""Hybrid fine-tuning inside the Hugging Face ``Trainer``.

:class:`HybridTrainer` is a ``transformers.Trainer`` whose optimizer step is the core's
:class:`~hybridopt.HybridOptimizer` step: the ZO block x (for ``hybrid``: the base weights) moves
along the two-point estimate, the FO block y (the peft adapter) along its gradient at the
unperturbed point, each with its own learning rate; batches come from random reshuffling.
:class:`HybridTrainingArguments` adds the method and its hyperparameters to ``TrainingArguments``::

    args = HybridTrainingArguments(output_dir="out", method="hybrid", lr_x=1e-6, learning_rate=1e-3,
                                   mu=1e-3, max_steps=100, per_device_train_batch_size=8)
    trainer = HybridTrainer(model=peft_model, args=args, train_dataset=train, eval_dataset=dev,
                            data_collator=collator, processing_class=tokenizer)
    trainer.train()
    trainer.save_model("out/final")    # updated base weights + the adapter in out/final/adapter

Everything else is the Trainer's (evaluation, logging and ``report_to``, callbacks, ``save_steps``
checkpoints, ``resume_from_checkpoint``, ``load_best_model_at_end``, ``torchrun``).  Besides, every
log line goes to ``output_dir/metrics.jsonl`` and ``output_dir/metrics.csv``.

This module is an integration layer: the optimizer core never imports it.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

# only the core's public API (hybridopt/__init__), so a rebuilt core plugs in unchanged
from . import (HybridConfig, HybridOptimizer, ModuleProblem, RandomReshuffling, StepStats, lr_multiplier, methods,
               split_blocks)
from .distributed import Communicator
from .io import write_text

#: ``lr_scheduler_type`` values the core's schedule can follow (shared by η_x and η_y)
SCHEDULES = {"constant": "constant", "constant_with_warmup": "constant", "linear": "linear", "cosine": "cosine"}
_log = logging.getLogger(__name__)
_DEFAULT_OPTIMS = ("adamw_torch", "adamw_torch_fused")


@dataclass
class HybridTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the hybrid optimizer's settings.

    The FO block's learning rate is ``lr_y`` or, when unset, the usual ``learning_rate``; its
    optimizer is ``fo_optimizer`` (``adam`` = AdamW with ``adam_beta1/2``, ``adam_epsilon`` and
    ``weight_decay`` on matrices; ``sgd``, the theorem's; ``momentum``).  ``lr_scheduler_type``
    (``constant``, ``constant_with_warmup``, ``linear``, ``cosine``) with ``warmup_steps`` is the
    core's schedule, applied to both learning rates.  Gradient clipping is not part of the hybrid
    step (``max_grad_norm`` must stay 0), nor is fp16 loss scaling; ``gradient_accumulation_steps``
    splits the step's batch into micro-batches evaluated with the same ZO directions.
    """

    method: str = field(default="hybrid", metadata={"help": f"one of {', '.join(methods.METHODS)}"})
    lr_x: float = field(default=1e-6, metadata={"help": "learning rate of the ZO block (eta_x)"})
    lr_y: float | None = field(default=None, metadata={"help": "learning rate of the FO block (eta_y); "
                                                                 "default: learning_rate"})
    mu: float = field(default=1e-3, metadata={"help": "ZO smoothing radius"})
    q: int = field(default=1, metadata={"help": "ZO directions per step"})
    direction: str = field(default="gaussian", metadata={"help": "gaussian (the theorem's), rademacher or sphere"})
    estimator: str = field(default="paired", metadata={"help": "paired (the theorem's estimator, both probes in one "
                                                                  "doubled-batch forward), central (the same from two "
                                                                  "forwards) or forward"})
    zo_rule: str = field(default="sgd", metadata={"help": "ZO update rule: sgd (the theorem's) or momentum"})
    zo_momentum: float = field(default=0.9, metadata={"help": "momentum of zo_rule='momentum'"})
    fo_optimizer: str = field(default="adam", metadata={"help": "sgd, momentum or adam (AdamW)"})
    momentum: float = field(default=0.9, metadata={"help": "momentum of fo_optimizer='momentum'"})
    zo_weight_decay: float = field(default=0.0, metadata={"help": "weight decay of the ZO block's matrices"})
    zo_seed: int | None = field(default=None, metadata={"help": "seed of the ZO directions (default: seed)"})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "constant, constant_with_warmup, "
                                                                         "linear or cosine (both learning rates)"})
    max_grad_norm: float = field(default=0.0, metadata={"help": "must be 0: no clipping in the hybrid step"})

    def __post_init__(self) -> None:
        super().__post_init__()
        methods.get(self.method)                            # ValueError naming the valid ones
        if self.max_grad_norm:
            raise ValueError(f"max_grad_norm={self.max_grad_norm}: gradient clipping is not part of the hybrid "
                             "step; set max_grad_norm=0")
        if self.fp16:
            raise ValueError("fp16 mixed precision needs loss scaling, which the hybrid step does not do; load "
                             "the model in bfloat16 instead (ZO probes restore bf16 weights exactly)")
        if str(getattr(self.optim, "value", self.optim)) not in _DEFAULT_OPTIMS:
            raise ValueError(f"optim={self.optim!r} does not apply: the FO block's optimizer is fo_optimizer "
                             "(sgd, momentum or adam)")
        self._schedule()
        self.hybrid_config(total_steps=self.max_steps if self.max_steps > 0 else 1)

    def _schedule(self) -> str:
        name = str(getattr(self.lr_scheduler_type, "value", self.lr_scheduler_type))
        if name not in SCHEDULES:
            raise ValueError(f"lr_scheduler_type={name!r} is not a schedule of the hybrid optimizer; valid: "
                             f"{', '.join(SCHEDULES)}")
        return name

    def hybrid_config(self, total_steps: int | None) -> HybridConfig:
        """The core's :class:`~hybridopt.HybridConfig` for a run of ``total_steps`` steps."""
        name = self._schedule()
        warmup = 0 if name == "constant" else self.get_warmup_steps(total_steps or 0)
        return HybridConfig(
            lr_x=self.lr_x, lr_y=self.learning_rate if self.lr_y is None else self.lr_y, mu=self.mu, q=self.q,
            estimator=self.estimator, direction=self.direction, zo_rule=self.zo_rule, zo_momentum=self.zo_momentum,
            fo_optimizer=self.fo_optimizer,
            momentum=self.momentum, betas=(self.adam_beta1, self.adam_beta2), adam_eps=self.adam_epsilon,
            weight_decay_x=self.zo_weight_decay, weight_decay_y=self.weight_decay, schedule=SCHEDULES[name],
            warmup_steps=warmup, total_steps=total_steps if SCHEDULES[name] != "constant" else None,
            grad_accum=self.gradient_accumulation_steps,
            seed=self.seed if self.zo_seed is None else self.zo_seed)


class ReshuffleSampler(torch.utils.data.Sampler):
    """Random reshuffling as the core draws it: the order of epoch e is the e-th permutation of
    :class:`~hybridopt.RandomReshuffling` ``(n, seed)``, so cutting it into batches gives exactly
    the core sampler's batches.  It depends only on the epoch (``set_epoch``), so the Trainer's
    resume (skip the batches already seen in the epoch) continues the same sequence."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        rr = RandomReshuffling(self.n, batch_size=self.n, seed=self.seed)
        for _ in range(self.epoch):
            rr.next_batch()
        return iter(rr.next_batch().tolist())


class _CoreStep(torch.optim.Optimizer):
    """What the Trainer holds as its optimizer.  :meth:`HybridTrainer.training_step` has already
    taken the whole hybrid step (both blocks), so ``step`` and ``zero_grad`` do nothing;
    ``state_dict`` is the core's (step count, FO optimizer state, ZO log), which the Trainer saves
    in every checkpoint; the one parameter group carries the FO (else ZO) learning rate for the
    Trainer's scheduler and logs."""

    def __init__(self, core: HybridOptimizer) -> None:
        self.core = core
        params = list(core.fo_params) or [torch.zeros(0)]
        super().__init__([{"params": params}], {"lr": core.config.lr_y if core.fo_params else core.config.lr_x})

    def step(self, closure: Callable | None = None):  # noqa: D102 - the step happened in training_step
        return None

    def zero_grad(self, set_to_none: bool = True) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"hybrid": self.core.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.core.load_state_dict(state["hybrid"])


class _Unwrapped(torch.nn.Module):
    """Stands for the model when training with several processes, so that the Trainer does not wrap
    it in DistributedDataParallel: the core communicates by itself (q + 1 scalars for the ZO
    block, the FO gradients in one flat buffer)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


class TaskDataset(torch.utils.data.Dataset):
    """The examples of one task split for :class:`HybridTrainer` (``task=``): each item is an
    example's index; the trainer scores its candidates (:mod:`hybridopt.benchmarks.scoring`)."""

    def __init__(self, encoded, key: int) -> None:
        self.encoded, self.key = encoded, key

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, i: int) -> dict[str, int]:
        return {"example_index": int(i), "task_split": self.key, "labels": int(self.encoded.gold[i])}


def _collate_task(features: list[dict[str, int]]) -> dict[str, torch.Tensor]:
    return {k: torch.tensor([f[k] for f in features], dtype=torch.long) for k in features[0]}


class MetricsFiles(TrainerCallback):
    """``output_dir/metrics.jsonl``: every log (training steps, evaluations) appended as one JSON
    line the moment it is made; ``output_dir/metrics.csv``: the same rows, one column per key
    seen (rewritten atomically).  A resumed run first drops the rows after its checkpoint."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] | None = None

    @staticmethod
    def _paths(args) -> tuple[Path, Path]:
        return Path(args.output_dir) / "metrics.jsonl", Path(args.output_dir) / "metrics.csv"

    def _load(self, args) -> list[dict[str, Any]]:
        if self.rows is None:
            self.rows = []
            jsonl = self._paths(args)[0]
            if jsonl.exists():
                for line in jsonl.read_text(encoding="utf-8").splitlines():
                    try:
                        self.rows.append(json.loads(line))
                    except json.JSONDecodeError:    # torn by a crash
                        pass
        return self.rows

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.rows = [r for r in self._load(args) if r.get("step", 0) <= state.global_step]
        write_text(self._paths(args)[0], "".join(json.dumps(r) + "\n" for r in self.rows))
        self._write_csv(args)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        rows = self._load(args)
        row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float, str))}}
        rows.append(row)
        jsonl = self._paths(args)[0]
        jsonl.parent.mkdir(parents=True, exist_ok=True)
        with open(jsonl, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
        self._write_csv(args)

    def _write_csv(self, args) -> None:
        rows = self.rows or []
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        write_text(self._paths(args)[1], buf.getvalue())


class _FlushAtEnd(TrainerCallback):
    """The core folds each ZO update into the next step's probe sweep; when training ends no sweep
    comes, so the last update is written here (evaluations and ``state_dict()`` flush by themselves)."""

    def __init__(self, trainer: "HybridTrainer") -> None:
        self.trainer = trainer

    def on_train_end(self, args, state, control, **kwargs):
        self.trainer._flush()


def _is_causal_lm(model: torch.nn.Module) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    get = getattr(model, "get_base_model", None)
    inner = get() if callable(get) else model
    return inner._get_name() in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()


class HybridTrainer(Trainer):
    """A ``transformers.Trainer`` that trains with the hybrid optimizer (or any of the five methods).

    The model is any causal LM (or, for the methods without a ZO block, any model whose forward
    returns a loss), with a peft adapter for ``hybrid``, ``fo-peft`` and ``zo-peft``.  The loss of a
    batch with ``labels`` is the model's own: the causal-LM token cross-entropy (``ForCausalLMLoss``,
    mean over the label tokens) computed from the logits, so the ZO probes never pass ``labels`` to
    the model; ``compute_loss_func`` replaces it as in the Trainer.  With ``task=`` (a task name,
    task file or :class:`~hybridopt.benchmarks.tasks.Task`) the trainer builds the train/dev
    datasets itself and a classification task trains on the candidate loss and reports
    ``eval_accuracy`` (an SFT task: ``eval_loss``, the target loss).

    Hooks overridden, and why (the Trainer's loop itself is not copied):

    * ``create_optimizer``: builds the :class:`~hybridopt.HybridOptimizer` over a
      :class:`~hybridopt.ModuleProblem` of the model; the Trainer holds a stand-in (:class:`_CoreStep`)
      whose ``state_dict`` is the core's, so ``optimizer.pt`` checkpoints it;
    * ``create_scheduler``: the core applies its own schedule to both learning rates; the Trainer's
      scheduler only mirrors it for the logs;
    * ``training_step``: one core step per optimizer step (FO gradient at the unperturbed point,
      out-of-place ZO probes, the core's sweep count, directions from the core's seeds); with
      gradient accumulation the micro-batches are collected and the step runs on the last one;
    * ``_get_train_sampler``: random reshuffling with the core's permutations (:class:`ReshuffleSampler`);
    * ``_wrap_model``: no DistributedDataParallel under ``torchrun``; the core all-reduces q + 1
      scalars for the ZO block and the FO gradients in one buffer;
    * ``_get_grad_norm``: the core already has ||∇_y f_B|| (logged as ``grad_norm``);
    * ``compute_loss``: task batches (candidate scoring); otherwise the Trainer's;
    * ``_save``, ``_load_from_checkpoint``, ``_load_best_model``: a checkpoint / ``save_model``
      directory holds the updated base weights and the adapter (``adapter/``), not the adapter alone
      (:mod:`hybridopt.benchmarks.export`), and loads back bit for bit;
    * ``log``: adds ``lr_x`` and ``lr_y``;
    * and a callback writes the last ZO update at the end of training (the core folds each update into
      the next step's sweep; evaluations, ``state_dict()`` and saving flush by themselves).

    The model stays in ``eval()`` mode (no dropout): the ZO differences need a deterministic loss.
    """

    def __init__(self, model=None, args: HybridTrainingArguments | None = None, *, task=None,
                 task_max_length: int = 160, truncate_prompts: bool = False, **kwargs) -> None:
        if args is None:
            args = HybridTrainingArguments(output_dir="trainer_output")
        if not isinstance(args, HybridTrainingArguments):
            raise TypeError("HybridTrainer needs HybridTrainingArguments (TrainingArguments + the method's settings)")
        if args.n_gpu > 1:
            raise ValueError("HybridTrainer runs one device per process; launch several processes with torchrun")
        if any(o is not None for o in kwargs.get("optimizers", (None, None))) or kwargs.get("optimizer_cls_and_kwargs"):
            raise ValueError("HybridTrainer builds its own optimizer (the hybrid step) and schedule; set them "
                             "through HybridTrainingArguments (fo_optimizer, lr_x, learning_rate, lr_scheduler_type)")
        self.task, self._task_splits = None, {}
        if task is not None:
            kwargs = self._task_setup(task, task_max_length, truncate_prompts, kwargs)
            args.remove_unused_columns = False
        super().__init__(model=model, args=args, **kwargs)
        if self.task is not None:
            self.label_names = ["labels"]
        self.add_callback(MetricsFiles())
        self.add_callback(_FlushAtEnd(self))
        self.hybrid: HybridOptimizer | None = None
        self._stash: list[dict[str, Any]] = []
        self._offset = 0
        self._last: StepStats | None = None

    # -- tasks -------------------------------------------------------------------------------
    def _task_setup(self, task, max_length: int, truncate: bool, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The task's splits under the CLI's prompt-length rule (:func:`~hybridopt.benchmarks.scoring.
        encode_fitting`): a prompt longer than ``task_max_length`` is a ``ValueError`` naming how many
        and the length that fits, unless ``truncate_prompts=True`` (then cut from the left, one warning)."""
        from .benchmarks.scoring import encode_fitting
        from .benchmarks.tasks import load_splits, load_task

        tok = kwargs.get("processing_class")
        if tok is None:
            raise ValueError("HybridTrainer(task=...) needs processing_class=<the tokenizer>")
        self.task = load_task(task)
        splits = list(load_splits(self.task).items())
        encoded = encode_fitting(tok, {name: ex for name, ex in splits if ex}, max_length, truncate,
                                 warn=_log.warning, length_option="task_max_length",
                                 truncate_option="truncate_prompts=True")
        for k, (name, _) in enumerate(splits):
            if name in encoded:
                self._task_splits[name] = TaskDataset(encoded[name], k)
        kwargs.setdefault("train_dataset", self._task_splits["train"])
        kwargs.setdefault("eval_dataset", self._task_splits["dev"])
        kwargs.setdefault("data_collator", _collate_task)
        if self.task.kind == "classification":
            kwargs.setdefault("compute_metrics", _accuracy)
        return kwargs

    def task_dataset(self, split: str) -> TaskDataset:
        """The task's ``train``, ``dev`` or ``test`` split as a dataset (e.g. ``trainer.evaluate(
        trainer.task_dataset("test"), metric_key_prefix="test")``)."""
        if split not in self._task_splits:
            raise KeyError(f"no {split!r} split in task {getattr(self.task, 'name', None)!r}")
        return self._task_splits[split]

    def _encoded(self, key: int):
        return next(d.encoded for d in self._task_splits.values() if d.key == key)

    # -- the optimizer ---------------------------------------------------------------------------
    def create_optimizer(self, model=None):
        if self.optimizer is None:
            args: HybridTrainingArguments = self.args
            if self.train_dataset is None or not hasattr(self.train_dataset, "__len__"):
                raise ValueError("HybridTrainer needs a map-style train_dataset (random reshuffling permutes indices)")
            from .llm.models import parameter_blocks
            base, adapter = parameter_blocks(self.model)
            zo, fo = split_blocks(args.method, base, adapter)
            problem = ModuleProblem(self.model, self._loss_fn, zo, fo, n=len(self.train_dataset))
            comm = Communicator() if args.world_size > 1 else None
            total = self.state.max_steps or (args.max_steps if args.max_steps > 0 else None)
            self.hybrid = HybridOptimizer(problem, args.hybrid_config(total), comm=comm)
            self.optimizer = _CoreStep(self.hybrid)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            cfg = self.hybrid.config
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer,
                                                                  lambda t: lr_multiplier(cfg, t))
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def _get_train_sampler(self, train_dataset=None):
        ds = train_dataset if train_dataset is not None else self.train_dataset
        if ds is None or not hasattr(ds, "__len__"):
            raise ValueError("HybridTrainer needs a map-style train_dataset (random reshuffling permutes indices)")
        seed = self.args.seed if self.args.data_seed is None else self.args.data_seed
        return ReshuffleSampler(len(ds), seed)

    def _wrap_model(self, model, training: bool = True, dataloader=None):
        if training and self.args.world_size > 1:
            return model if isinstance(model, _Unwrapped) else _Unwrapped(model)
        return model

    def _get_grad_norm(self, model, grad_norm=None):
        if self._last is None or self._last.fo_grad_sq is None:
            return None
        return math.sqrt(float(self._last.fo_grad_sq))

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        self._stash.append(self._prepare_inputs(inputs))
        if not self.accelerator.sync_gradients:     # not the last micro-batch of this step yet
            return torch.zeros((), device=self.args.device)
        rows = sum(_rows(b) for b in self._stash)
        comm = self.hybrid.comm
        world, rank = (comm.world_size, comm.rank) if comm is not None else (1, 0)
        # The core takes the global batch (every rank's rows, in rank order) and evaluates this
        # rank's shard; the loss function maps the shard back to the rows held here.
        self._offset = rank * rows
        try:
            with self.accelerator.autocast():
                stats = self.hybrid.step(torch.arange(world * rows))
        finally:
            self._stash = []
        self._last = stats
        return stats.loss.detach().to(self.args.device)

    # -- the loss ----------------------------------------------------------------------------------
    def _loss_fn(self, model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
        """f on the rows ``idx`` of the step's batch (one or more collected micro-batches)."""
        idx = idx - self._offset
        if "example_index" in self._stash[0]:
            from .benchmarks.scoring import make_loss_fn
            ex = torch.cat([b["example_index"] for b in self._stash]).cpu()[idx.cpu()]
            enc = self._encoded(int(self._stash[0]["task_split"][0]))
            return make_loss_fn(enc)(model, ex)
        total, weight, start = None, 0, 0
        for b in self._stash:
            n = _rows(b)
            sel = idx[(idx >= start) & (idx < start + n)] - start
            start += n
            if len(sel) == 0:
                continue
            part = b if len(sel) == n and bool((sel == torch.arange(n, device=sel.device)).all()) else \
                {k: (v[sel.to(v.device)] if torch.is_tensor(v) and v.dim() and v.shape[0] == n else v) for k, v in b.items()}
            s, w = self.batch_loss(model, part)
            total = s if total is None else total + s
            weight += w
        return total / weight

    def batch_loss(self, model: torch.nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, int]:
        """``(sum, weight)`` of the training loss over one collated batch; the loss is sum / weight.

        Causal LM with ``labels``: the summed token cross-entropy and the number of label tokens
        (HF's ``ForCausalLMLoss``; sum / weight is the model's own loss), from logits of a forward
        without ``labels``.  With ``compute_loss_func``: its value times the rows.  Other models
        (methods without a ZO block only): the model's own ``loss`` times the rows."""
        from transformers.loss.loss_utils import ForCausalLMLoss

        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        rows = _rows(inputs if inputs else {"labels": labels})
        if self.compute_loss_func is not None:
            out = model(**inputs)
            return self.compute_loss_func(out, labels, num_items_in_batch=None) * rows, rows
        if labels is not None and _is_causal_lm(model):
            logits = _logits(model(**inputs))
            shift = logits.shape[1] - labels.shape[1]      # peft prompt tuning prepends virtual tokens
            if shift:
                labels = torch.cat([labels.new_full((labels.shape[0], shift), -100), labels], dim=1)
            count = int((labels[:, 1:] != -100).sum())
            total = ForCausalLMLoss(logits, labels, logits.shape[-1], num_items_in_batch=1)
            return total, max(count, 1)
        if self.hybrid is not None and self.hybrid.zo_params:
            raise ValueError(f"HybridTrainer cannot compute the ZO probes' loss of a {type(model).__name__} "
                             "from its outputs (it is not a causal LM with labels); pass compute_loss_func="
                             "(outputs, labels, num_items_in_batch) -> loss, or override batch_loss")
        out = model(**inputs, **({"labels": labels} if labels is not None else {}))
        return (out["loss"] if isinstance(out, dict) else out[0]) * rows, rows

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        if "example_index" in inputs:
            from .benchmarks.scoring import candidate_scores, task_loss
            enc = self._encoded(int(inputs["task_split"][0])).subset(inputs["example_index"].cpu())
            scores = candidate_scores(model, enc, batch_size=max(1, len(enc) * enc.num_candidates))
            loss = task_loss(scores, enc.gold)
            return (loss, {"loss": loss, "logits": scores}) if return_outputs else loss
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._last is not None and "loss" in logs:
            logs = {**logs, "lr_x": self._last.lr_x, "lr_y": self._last.lr_y}
        super().log(logs, start_time)

    # -- saving and loading ------------------------------------------------------------------------
    def _flush(self) -> None:
        if self.hybrid is not None:
            self.hybrid.flush()

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        from .benchmarks.export import export_model
        self._flush()                                   # on every rank: they hold the same ZO block
        if not self.args.should_save:
            return
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        tok = self.processing_class if hasattr(self.processing_class, "save_pretrained") else None
        export_model(self.model, tok, output_dir, into_existing=True,
                     meta={"method": self.args.method, "step": self.state.global_step, "trainer": "HybridTrainer"})
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def export(self, output_dir: str, merge: bool = False, overwrite: bool = False) -> Path:
        """Write the model (updated base weights + adapter, or merged with ``merge``) as an HF
        directory; ``save_model`` writes the unmerged form."""
        from .benchmarks.export import export_model
        self._flush()
        tok = self.processing_class if hasattr(self.processing_class, "save_pretrained") else None
        return export_model(self.model, tok, output_dir, merge=merge, overwrite=overwrite,
                            meta={"method": self.args.method, "step": self.state.global_step, "trainer": "HybridTrainer"})

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        from .benchmarks.export import load_into
        self._flush()
        load_into(self.model if model is None else model, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        from .benchmarks.export import load_into
        self._flush()
        load_into(self.model, self.state.best_model_checkpoint)


def _rows(batch: dict[str, Any]) -> int:
    for v in batch.values():
        if torch.is_tensor(v) and v.dim():
            return int(v.shape[0])
    raise ValueError("a batch needs at least one tensor with a batch dimension")


def _logits(out) -> torch.Tensor:
    return out["logits"] if isinstance(out, dict) or hasattr(out, "keys") else out[0]


def _accuracy(pred) -> dict[str, float]:
    import numpy as np
    scores = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    return {"accuracy": float(np.mean(np.argmax(scores, axis=-1) == pred.label_ids))}


__all__ = ["HybridTrainer", "HybridTrainingArguments", "MetricsFiles", "ReshuffleSampler", "TaskDataset"]
