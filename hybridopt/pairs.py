"""Doubling a model call's batch for paired probes, and splitting its output back.

A paired probe evaluates f(x + μu) and f(x − μu) in **one forward over a doubled batch**: every
call of the problem's model gets its batch-major inputs concatenated with themselves
(rows [0, B) will see x + μu, rows [B, 2B) x − μu), and the output is cut back into the two
halves.  The rules, which hold for ``transformers`` models and for ordinary batch-first
modules:

* the batch size B is dim 0 of the call's first tensor argument (positional, then keyword);
* doubled: that tensor, and every other tensor of ≥ 2 dims whose dim 0 is B (1-D tensors such
  as ``logits_to_keep`` or ``cache_position`` are not batch-major and pass unchanged);
* in the output, every tensor whose dim 0 is 2B is split; any other tensor (a scalar loss
  computed inside the model, say) would mix the halves and is refused; non-tensors are shared;
* inside the model, a module owning ZO tensors receives its inputs' rows for x + μu first and
  for x − μu second: dim 0 a multiple of 2B (the batch, or the batch flattened batch-major).

A model with other conventions passes its own ``pair_inputs`` to
:class:`~hybridopt.problem.ModuleProblem`, or uses ``estimator='central'``.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

PairInputs = Callable[[tuple, dict], tuple[tuple, dict, int]]


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    for v in list(args) + list(kwargs.values()):
        if isinstance(v, torch.Tensor) and v.dim() >= 1:
            return v
    return None


def double_inputs(args: tuple, kwargs: dict) -> tuple[tuple, dict, int]:
    """The call's inputs with their batch doubled, and the original batch size B."""
    first = _first_tensor(args, kwargs)
    if first is None:
        raise RuntimeError("paired probes: the model was called without a batch-major tensor argument; "
                           "pass pair_inputs= to ModuleProblem or use estimator='central'")
    B = first.shape[0]

    def double(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and (v is first or (v.dim() >= 2 and v.shape[0] == B)):
            return torch.cat([v, v])
        return v

    return tuple(double(v) for v in args), {k: double(v) for k, v in kwargs.items()}, B


def split_output(out: Any, B: int, where: str = "output") -> tuple[Any, Any]:
    """``(first half, second half)`` of a model output with 2B rows (tensor, tuple, list, dict or
    a ``transformers`` ModelOutput)."""
    if isinstance(out, torch.Tensor):
        if out.dim() >= 1 and out.shape[0] == 2 * B:
            return out[:B], out[B:]
        raise RuntimeError(f"paired probes: the model's {where} has shape {tuple(out.shape)}, not a "
                           f"batch of {2 * B} rows, so it mixes the two probes (a loss computed inside the "
                           "model?). Compute the loss from per-example outputs, or use estimator='central'")
    if isinstance(out, dict):
        parts = {k: split_output(v, B, f"{where}.{k}") for k, v in out.items()}
        make = type(out) if type(out) is not dict else dict
        return make(**{k: a for k, (a, _) in parts.items()}), make(**{k: b for k, (_, b) in parts.items()})
    if isinstance(out, (tuple, list)):
        parts = [split_output(v, B, f"{where}[{i}]") for i, v in enumerate(out)]
        if hasattr(out, "_fields"):  # namedtuple
            return type(out)(*(a for a, _ in parts)), type(out)(*(b for _, b in parts))
        return type(out)(a for a, _ in parts), type(out)(b for _, b in parts)
    return out, out


def split_inputs(args: tuple, kwargs: dict, rows: int) -> list[tuple[tuple, dict]]:
    """A module call's inputs cut into the two halves of a doubled batch of ``rows`` rows.

    A tensor whose dim 0 is a multiple of ``rows`` is cut in the middle: the batch itself, or the
    batch flattened batch-major with other dimensions (e.g. OPT's FFN sees (2B·T, H)); tensors
    with another dim 0 (broadcast rotary tables, say) go to both halves unchanged."""

    def part(v: Any, i: int) -> Any:
        if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] % rows == 0:
            h = v.shape[0] // 2
            return v[:h] if i == 0 else v[h:]
        if isinstance(v, (tuple, list)) and not hasattr(v, "_fields"):
            return type(v)(part(x, i) for x in v)
        return v

    return [(tuple(part(v, i) for v in args), {k: part(v, i) for k, v in kwargs.items()}) for i in (0, 1)]


def cat_outputs(outs: list[Any]) -> Any:
    """Concatenate the two halves' outputs of one module call along dim 0."""
    a, b = outs
    if isinstance(a, torch.Tensor):
        return torch.cat([a, b])
    if isinstance(a, dict):
        make = type(a) if type(a) is not dict else dict
        return make(**{k: cat_outputs([a[k], b[k]]) for k in a})
    if isinstance(a, (tuple, list)):
        items = [cat_outputs([x, y]) for x, y in zip(a, b)]
        return type(a)(*items) if hasattr(a, "_fields") else type(a)(items)
    return a


def signature(args: tuple, kwargs: dict) -> tuple:
    """Shapes of a call's tensor arguments: the replay of a paired call checks it matches."""
    def s(v):
        return tuple(v.shape) if isinstance(v, torch.Tensor) else None
    return tuple(s(v) for v in args), tuple((k, s(v)) for k, v in sorted(kwargs.items()))
