"""Export a fine-tuned model as a directory that ``transformers`` loads, base update included.

The hybrid method (and zo-full, fo-full) changes the **base weights** as well as the adapter, so a
bare ``peft_model.save_pretrained()`` (which writes the adapter alone) loses the base update.  An
export holds everything::

    DIR/model.safetensors, config.json, ...   the updated base weights (+ the tokenizer files)
    DIR/adapter/                               the peft adapter (adapter_config.json + weights),
                                               absent when merged or when the method has none
    DIR/hybridopt.json                         what was exported (method, task, step, config, ...)

Load it with ``AutoModelForCausalLM.from_pretrained(DIR)`` and, when ``DIR/adapter`` exists,
``PeftModel.from_pretrained(model, DIR / "adapter")`` (:func:`load_exported` does both).  The
unmerged form reproduces the trained model bit for bit; ``merge=True`` folds the adapter into the
weights (peft's ``merge_and_unload`` on a copy of the model), which changes the float rounding of
the forward, not the function.

Directories are written to a temporary folder and then renamed into place, so a crash never
leaves a half-written export.  Call ``optimizer.flush()`` (or ``close()``) before exporting the
model of a live :class:`~hybridopt.HybridOptimizer`, so that the ZO block holds its latest value.
"""
from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from hybridopt.io import write_json

META = "hybridopt.json"
ADAPTER_DIR = "adapter"
EXPORT_FORMAT = 1
#: dev examples scored to check an export (the loss must be reproduced bit for bit)
VERIFY_EXAMPLES = 32


def _is_peft(model) -> bool:
    try:
        import peft
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, peft.PeftModel)


def base_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The base model's weights (as updated by training) under the plain model's names, without
    the adapter, and without changing ``model``: peft's wrappers keep the original module as
    ``base_layer`` (tuner layers) or ``original_module`` (``modules_to_save``); those path segments
    are dropped, the adapter tensors (found by structure) are left out."""
    from hybridopt.llm.models import adapter_parameters_of

    if not _is_peft(model):
        return {k: v.detach() for k, v in model.state_dict().items()}
    adapter = {id(p) for p in adapter_parameters_of(model)}
    base = model.get_base_model()
    out: dict[str, torch.Tensor] = {}
    for name, t in base.state_dict(keep_vars=True).items():
        if id(t) in adapter:
            continue
        parts = [p for p in name.split(".") if p not in ("base_layer", "original_module")]
        if "modules_to_save" in parts:
            continue
        out[".".join(parts)] = t.detach()
    return out


def _publish(tmp: Path, out: Path, into_existing: bool) -> None:
    """Move the finished ``tmp`` folder to ``out``: a rename when ``out`` is new or replaced whole;
    into an existing folder that holds other things (a Trainer's output_dir), entry by entry."""
    if not out.exists():
        os.replace(tmp, out)
    elif not into_existing:
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "x")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        for entry in sorted(tmp.iterdir()):
            target = out / entry.name
            if target.is_dir() and not target.is_symlink():
                aside = Path(tempfile.mkdtemp(prefix=f".{entry.name}.old-", dir=out))
                os.replace(target, aside / "x")
                os.replace(entry, target)
                shutil.rmtree(aside, ignore_errors=True)
            else:
                os.replace(entry, target)


def export_model(model: torch.nn.Module, tokenizer, out: str | os.PathLike, merge: bool = False,
                 overwrite: bool = False, meta: dict[str, Any] | None = None,
                 into_existing: bool = False) -> Path:
    """Write ``model`` (a plain or peft causal LM) as an HF directory (see the module docstring).

    ``merge``: fold a LoRA-type adapter into the weights (on a copy; prompt-learning adapters such
    as prefix tuning cannot be merged).  An existing ``out`` is refused unless ``overwrite`` (an
    earlier export is then replaced whole) or ``into_existing`` (files are replaced one by one,
    other entries kept: a Trainer's output folder).  ``meta`` is added to ``hybridopt.json``."""
    out = Path(out)
    if out.exists() and not (overwrite or into_existing):
        raise FileExistsError(f"{str(out)!r} already exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{str(out)!r} exists and is not a directory")
    peft_model = _is_peft(model)
    if merge and peft_model and model.active_peft_config.is_prompt_learning:
        raise ValueError(f"a {model.active_peft_config.peft_type.value} adapter cannot be merged into the "
                         "weights; export it unmerged")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out if into_existing and out.exists() else out.parent))
    try:
        with _quiet():
            if peft_model and merge:
                merged = copy.deepcopy(model).merge_and_unload()
                merged.save_pretrained(tmp)
                del merged
            elif peft_model:
                model.get_base_model().save_pretrained(tmp, state_dict=base_state_dict(model))
                adapter = tmp / ADAPTER_DIR
                model.save_pretrained(adapter, save_embedding_layers=False)
                _portable_adapter_config(adapter, out)
            else:
                model.save_pretrained(tmp)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
        info = {"format": EXPORT_FORMAT, "merged": bool(merge and peft_model),
                "adapter": ADAPTER_DIR if peft_model and not merge else None,
                "peft_type": str(model.active_peft_config.peft_type.value) if peft_model else None,
                "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
                "load": ("AutoModelForCausalLM.from_pretrained(DIR)"
                         + (" + PeftModel.from_pretrained(model, DIR/'adapter')" if peft_model and not merge else "")),
                **(meta or {})}
        write_json(tmp / META, info)
        _publish(tmp, out, into_existing and out.exists())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _portable_adapter_config(adapter: Path, out: Path) -> None:
    """Point the adapter's ``base_model_name_or_path`` at the export folder (its updated base),
    so ``AutoPeftModelForCausalLM.from_pretrained(DIR/adapter)`` finds it, not the original base."""
    import json
    cfg_path = adapter / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = str(out.resolve())
    write_json(cfg_path, cfg)


@contextlib.contextmanager
def _quiet():
    from transformers.utils import logging as hf_logging
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_exported(path: str | os.PathLike, device: str = "cpu"):
    """``(model, tokenizer)`` from an export, the way a user loads it with ``transformers`` (+ ``peft``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    with _quiet():
        model = AutoModelForCausalLM.from_pretrained(path).to(device)
        if (path / ADAPTER_DIR).is_dir():
            from peft import PeftModel
            model = PeftModel.from_pretrained(model, path / ADAPTER_DIR)
        tok = AutoTokenizer.from_pretrained(path)
    model.eval()
    return model, tok


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    single = path / "model.safetensors"
    if single.is_file():
        return load_file(str(single))
    index = path / "model.safetensors.index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{path}: no model.safetensors (not an export or checkpoint of this package)")
    import json
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    out: dict[str, torch.Tensor] = {}
    for shard in shards:
        out.update(load_file(str(path / shard)))
    return out


@torch.no_grad()
def load_into(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Copy an export's (or a HybridTrainer checkpoint's) weights into ``model`` in place: the base
    weights, then the adapter.  ``model`` must have the export's architecture and adapter."""
    path = Path(path)
    saved = _read_weights(path)
    live = base_state_dict(model)
    loaded, missing = set(), []
    for name, t in live.items():
        if name in saved:
            t.copy_(saved[name].to(device=t.device, dtype=t.dtype))
            loaded.add(t.data_ptr())
        else:
            missing.append(name)
    missing = [n for n in missing if live[n].data_ptr() not in loaded]   # tied weights are saved once
    unknown = sorted(set(saved) - set(live))
    if missing or unknown:
        raise ValueError(f"{path}: the weights do not match the model (missing {missing[:3]}, unexpected {unknown[:3]})")
    if _is_peft(model):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file
        adapter = path / ADAPTER_DIR / "adapter_model.safetensors"
        if not adapter.is_file():
            raise FileNotFoundError(f"{path}: no {ADAPTER_DIR}/adapter_model.safetensors for the model's adapter")
        result = set_peft_model_state_dict(model, load_file(str(adapter)))
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"{adapter}: unexpected adapter weights {result.unexpected_keys[:3]}")


@torch.no_grad()
def dev_loss(model, encoded, batch_size: int = 16) -> float:
    """Mean training loss (the task's) of ``model`` on an encoded split: what an export must reproduce."""
    from .scoring import evaluate
    return float(evaluate(model, encoded, batch_size=batch_size, metric="loss"))


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike, merge: bool = False,
               overwrite: bool = False, verify: bool = True, progress: bool = False) -> dict[str, Any]:
    """Rebuild a finished run's selected model (``selected.pt``) and export it to ``out``.

    ``verify``: reload ``out`` with ``transformers`` (+ ``peft``) and compare its dev loss (on up to
    :data:`VERIFY_EXAMPLES` dev examples) with the rebuilt model's: equal bit for bit unmerged,
    within float rounding merged.  When the method changed the base and trained an adapter, the
    report also gives the dev loss of the adapter alone on the original base (what a bare
    ``save_pretrained()`` of the peft model would keep)."""
    from . import runner
    from .config import ConfigError

    run_dir, out = Path(run_dir), Path(out)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {str(run_dir)!r} does not exist")
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {str(out)!r} already exists; pass --overwrite to replace it")
    cfg, s, step = runner.restore_selected(run_dir, progress=progress)
    report: dict[str, Any] = {"out": str(out), "step": step, "merged": merge, "method": cfg.method}
    enc = s.dev.subset(range(min(VERIFY_EXAMPLES, len(s.dev)))) if verify else None
    if verify:
        report["trained_dev_loss"] = dev_loss(s.model, enc, cfg.eval_batch_size)
    try:
        export_model(s.model, s.tokenizer, out, merge=merge, overwrite=overwrite,
                     meta={**runner.export_meta(cfg, step, run_dir),
                           **({"trained_dev_loss": report["trained_dev_loss"]} if verify else {})})
    except (FileExistsError, ValueError) as e:
        raise ConfigError(str(e)) from None
    if not verify:
        return report
    from hybridopt import methods
    m = methods.get(cfg.method)
    if m.uses_base and m.uses_adapter:
        fresh, _, _, _ = runner.build_model(cfg)
        from peft import get_peft_model_state_dict, set_peft_model_state_dict
        set_peft_model_state_dict(fresh, get_peft_model_state_dict(s.model))
        report["adapter_only_dev_loss"] = dev_loss(fresh, enc, cfg.eval_batch_size)
        del fresh
    del s
    return {**report, **check_export(out, enc, report["trained_dev_loss"], merge, cfg.device, cfg.eval_batch_size)}


def check_export(out: str | os.PathLike, encoded, trained: float, merged: bool, device: str = "cpu",
                 batch_size: int = 16) -> dict[str, Any]:
    """Reload an export with transformers (+ peft) and compare its dev loss with ``trained`` (the
    live model's on the same examples): an unmerged export must give the same float, bit for bit
    (else :class:`~benchmarks.runner.RunError`); a merged one agrees to float rounding."""
    from .runner import RunError

    reloaded, _ = load_exported(out, device=device)
    got = dev_loss(reloaded, encoded, batch_size)
    rep = {"trained_dev_loss": trained, "reloaded_dev_loss": got, "examples": len(encoded), "exact": got == trained}
    if not merged and not rep["exact"]:
        raise RunError(f"the export in {out} does not reproduce the trained model: dev loss {got!r} reloaded vs "
                       f"{trained!r} trained")
    return rep


__all__ = ["ADAPTER_DIR", "META", "base_state_dict", "check_export", "dev_loss", "export_model", "export_run",
           "load_exported", "load_into"]
