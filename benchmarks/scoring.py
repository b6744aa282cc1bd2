"""Candidate scoring for multiple-choice prompts with a causal LM.

A candidate ``(context, continuation)`` is scored by the length-normalised log-likelihood
of its continuation tokens given the context (MeZO ``forward_wrap_with_option_len``):

    score = (1/|cont|) * sum_t log p(cont_t | context, cont_<t)

Training uses ``classification_loss`` = cross-entropy over the candidates' scores (MeZO
``--train_as_classification``); evaluation predicts the argmax.  An SFT task has one candidate
(its target): its loss is the target's mean token negative log-likelihood, ``-score``
(:func:`task_loss`), and its metric that loss.

Tokenisation: ``whole = tok(context + continuation)`` and ``ctx = tok(context)`` (special
tokens such as BOS included); the continuation tokens are ``whole[len(ctx):]`` when ``ctx``
is a prefix of ``whole`` (so sentencepiece tokenizers see the text as one string), else
``tok(continuation, add_special_tokens=False)``.

Two computation paths, equal up to float rounding (tested):

* *single-token fast path*: when, in every example, all candidates share one context and
  every continuation is one token, one forward per example scores all candidates from the
  last context position's log-softmax (SST-2, WSC);
* *general path*: each (context, continuation[:-1]) sequence is run once; sequences are
  sorted by length, padded (left by default, or right) with an attention mask and explicit
  ``position_ids = cumsum(mask) - 1`` so that padding never shifts positions, and only
  the needed positions' logits are computed (``logits_to_keep``) where the model supports it.
  Left padding aligns every sequence's query positions at the end of the batch, so
  ``logits_to_keep`` keeps one position on the fast path (right padding keeps the union of
  the rows' last positions: (batch, ~10, vocabulary) logits, the largest activation of a ZO
  forward over the doubled batch of paired probes).  Both sides give the same scores up to
  float rounding (smollm2-135m, 32 examples of each task: ≤ 2.1e-5 apart).

Encode a split once with :func:`encode_split`; :func:`make_loss_fn` turns it into the
``loss_fn(model, batch_indices)`` that :class:`hybridopt.problem.ModuleProblem` expects.
"""
from __future__ import annotations

import inspect
import statistics
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .tasks import Example

IntSeq = list[int]


@dataclass
class EncodedSplit:
    """Token ids of a list of examples: ``contexts[i][k]``, ``continuations[i][k]``, ``gold[i]``."""

    contexts: list[list[IntSeq]]
    continuations: list[list[IntSeq]]
    gold: torch.Tensor
    pad_id: int
    padding_side: str = "left"

    def __post_init__(self) -> None:
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        if not (len(self.contexts) == len(self.continuations) == len(self.gold)):
            raise ValueError("contexts, continuations and gold differ in length")
        cs = {len(c) for c in self.contexts}
        if len(cs) > 1:
            raise ValueError(f"examples have different numbers of candidates: {sorted(cs)}")
        self.num_candidates = cs.pop() if cs else 0
        self.single_token = bool(self.contexts) and all(
            all(len(t) == 1 for t in conts) and all(c == ctxs[0] for c in ctxs)
            for ctxs, conts in zip(self.contexts, self.continuations))

    def __len__(self) -> int:
        return len(self.gold)

    def subset(self, indices: Sequence[int] | torch.Tensor) -> "EncodedSplit":
        if isinstance(indices, torch.Tensor):
            if indices.dim() != 1:
                raise ValueError(f"expected a 1-D tensor of example indices, got shape {tuple(indices.shape)}")
            indices = indices.tolist()
        idx = [int(i) for i in indices]
        return EncodedSplit([self.contexts[i] for i in idx], [self.continuations[i] for i in idx],
                            self.gold[idx], self.pad_id, self.padding_side)

    def num_tokens(self) -> int:
        return sum(len(a) + len(b) for ctxs, conts in zip(self.contexts, self.continuations)
                   for a, b in zip(ctxs, conts))


def _ids(tokenizer, text: str, special: bool) -> IntSeq:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[IntSeq, IntSeq]:
    """Token ids ``(context_ids, continuation_ids)``; see the module docstring."""
    ctx = _ids(tokenizer, context, True)
    whole = _ids(tokenizer, context + continuation, True)
    if len(whole) > len(ctx) and whole[:len(ctx)] == ctx:
        cont = whole[len(ctx):]
    else:
        cont = _ids(tokenizer, continuation, False)
    if not cont:
        raise ValueError(f"continuation {continuation!r} encodes to no tokens")
    if not ctx:
        raise ValueError(f"context {context!r} encodes to no tokens (the tokenizer adds no BOS)")
    return ctx, cont


def encode_split(tokenizer, examples: Sequence[Example], max_length: int | None = None,
                 padding_side: str = "left") -> EncodedSplit:
    """Tokenise every candidate once.  ``max_length`` left-truncates long contexts."""
    contexts, conts = [], []
    cache: dict[tuple[str, str], tuple[IntSeq, IntSeq]] = {}
    for ex in examples:
        cs, ks = [], []
        for pair in ex.candidates:
            if pair not in cache:
                cache[pair] = encode_pair(tokenizer, *pair)
            c, k = cache[pair]
            if max_length is not None and len(c) + len(k) > max_length:
                keep = max_length - len(k)
                if keep < 1:
                    raise ValueError(f"continuation of {len(k)} tokens does not fit max_length={max_length}")
                c = c[-keep:]
            cs.append(c)
            ks.append(k)
        contexts.append(cs)
        conts.append(ks)
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None) or 0
    gold = torch.tensor([ex.gold for ex in examples], dtype=torch.long)
    return EncodedSplit(contexts, conts, gold, int(pad), padding_side)


class PromptLengthError(ValueError):
    """Prompts that do not fit the length limit (a one-line message: how many, the length that fits)."""


def _left_cut(enc: EncodedSplit, max_length: int) -> EncodedSplit:
    """``enc`` with each context cut from the left so that context + continuation ≤ ``max_length``
    (what :func:`encode_split` with ``max_length`` gives, without tokenising again)."""
    contexts = []
    for cs, ks in zip(enc.contexts, enc.continuations):
        out = []
        for c, k in zip(cs, ks):
            keep = max_length - len(k)
            if keep < 1:
                raise PromptLengthError(f"continuation of {len(k)} tokens does not fit max_length={max_length}")
            out.append(c[-keep:] if len(c) > keep else c)
        contexts.append(out)
    return EncodedSplit(contexts, enc.continuations, enc.gold, enc.pad_id, enc.padding_side)


def encode_fitting(tokenizer, splits: dict[str, Sequence[Example]], max_length: int, truncate: bool = False,
                   warn: Callable[[str], None] | None = None, length_option: str = "--max-length",
                   truncate_option: str = "--truncate-prompts") -> dict[str, EncodedSplit]:
    """Tokenise each split whole, then apply the one prompt-length rule of this package (the CLI's
    ``--max-length``/``--truncate-prompts``, the Trainer's ``task_max_length``/``truncate_prompts``).

    A prompt (context + longest candidate) longer than ``max_length`` is a :class:`PromptLengthError`
    (one line: how many, and the length that fits them all) unless ``truncate``; then such prompts are
    cut from the left with one ``warn`` line saying how many, and a split most of whose prompts would
    lose more than three quarters of their tokens is still an error (little would be left of them but
    their ends).  ``length_option``/``truncate_option`` name the settings in the messages."""
    whole = {k: encode_split(tokenizer, ex) for k, ex in splits.items()}
    cut, longest, L = {}, 0, max_length
    for k, enc in whole.items():
        lengths = [max(len(c) + len(t) for c, t in zip(cs, ts)) for cs, ts in zip(enc.contexts, enc.continuations)]
        n = sum(x > L for x in lengths)
        if n and not truncate:
            raise PromptLengthError(f"{n} of {len(lengths)} {k} prompts do not fit max_length={L} (the longest "
                                    f"needs {max(lengths)} tokens); raise {length_option} to {max(lengths)} or "
                                    f"pass {truncate_option} to cut them from the left")
        if lengths and statistics.median(lengths) > 4 * L:
            raise PromptLengthError(f"max_length={L} keeps less than a quarter of most {k} prompts (median "
                                    f"{statistics.median(lengths):g} tokens, longest {max(lengths)}); raise "
                                    f"{length_option} (to {max(lengths)} to cut none)")
        if n:
            cut[k] = f"{n} of {len(lengths)} {k}"
            longest = max(longest, max(lengths))
    if cut and warn is not None:
        warn(f"prompts longer than max_length={L} tokens are cut from the left: {', '.join(cut.values())} "
             f"(the longest needs {longest}; {length_option} {longest} keeps them whole)")
    return {k: _left_cut(enc, L) if k in cut else enc for k, enc in whole.items()}


# ---- model plumbing ----------------------------------------------------------------------------

def _hf_model(model):
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def _supports_logits_to_keep(model) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(type(_hf_model(model)).forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def _virtual_tokens(model) -> int:
    """Positions that peft prompt tuning / p-tuning prepend to the logits (prefix tuning: 0)."""
    cfg = getattr(model, "active_peft_config", None)
    if cfg is None or not getattr(cfg, "is_prompt_learning", False):
        return 0
    if str(getattr(cfg.peft_type, "value", cfg.peft_type)) in ("PREFIX_TUNING", "CARTRIDGE"):
        return 0
    return int(cfg.num_virtual_tokens)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _pad(inputs: list[IntSeq], pad_id: int, padding_side: str):
    """Padded ids, attention mask, position ids (0.. over real tokens) and each row's offset."""
    n, L = len(inputs), max(len(s) for s in inputs)
    ids = torch.full((n, L), pad_id, dtype=torch.long)
    mask = torch.zeros((n, L), dtype=torch.long)
    offs = []
    for i, s in enumerate(inputs):
        o = L - len(s) if padding_side == "left" else 0
        ids[i, o:o + len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, o:o + len(s)] = 1
        offs.append(o)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, pos, offs


def _logits_at(model, ids, mask, pos, cols: torch.Tensor):
    """Forward; returns logits over the needed positions and ``cols`` re-indexed into them."""
    dev = _device(model)
    kwargs = dict(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                  use_cache=False)
    shift = _virtual_tokens(model)
    if shift == 0 and _supports_logits_to_keep(model):
        keep, inv = torch.unique(cols, sorted=True, return_inverse=True)
        kwargs["logits_to_keep"] = keep.to(dev)
        cols = inv
    logits = model(**kwargs).logits
    if shift:
        logits = logits[:, shift:]
    return logits, cols


def _forward_logprobs(model, inputs: list[IntSeq], queries: list[list[int]], targets: list[list[int]],
                      pad_id: int, padding_side: str) -> list[torch.Tensor]:
    """One padded forward.  For sequence ``i``, returns log p(targets[i][j] | inputs[i][:queries[i][j]+1])."""
    dev = _device(model)
    ids, mask, pos, offs = _pad(inputs, pad_id, padding_side)
    rows = torch.tensor([i for i, q in enumerate(queries) for _ in q], dtype=torch.long)
    cols = torch.tensor([offs[i] + c for i, q in enumerate(queries) for c in q], dtype=torch.long)
    tgt = torch.tensor([t for ts in targets for t in ts], dtype=torch.long, device=dev)
    logits, cols = _logits_at(model, ids, mask, pos, cols)
    sel = logits[rows.to(dev), cols.to(dev)].float()           # (total queries, V)
    lp = torch.log_softmax(sel, dim=-1).gather(-1, tgt[:, None]).squeeze(-1)
    return list(lp.split([len(q) for q in queries]))


def _batches(order: list[int], lengths: list[int], batch_size: int, max_tokens: int | None):
    b: list[int] = []
    for i in order:
        if b and (len(b) >= batch_size or (max_tokens and (len(b) + 1) * max(lengths[j] for j in b + [i]) > max_tokens)):
            yield b
            b = []
        b.append(i)
    if b:
        yield b


def candidate_scores(model, tokenizer_or_encoded, examples: Sequence[Example] | None = None,
                     batch_size: int = 16, fast_path: bool = True,
                     max_tokens: int | None = None, progress: str | None = None) -> torch.Tensor:
    """Log-scores ``[B, C]`` (length-normalised continuation log-likelihoods).

    ``tokenizer_or_encoded`` is an :class:`EncodedSplit` or a tokenizer (then ``examples``
    are encoded first).  ``batch_size`` is the number of sequences per forward
    (``max_tokens`` optionally caps padded tokens per forward).  Gradients flow to the model
    parameters that require them unless called under ``torch.no_grad()``.  ``progress``: a
    label; a progress bar over the forwards is shown on stderr under it.
    """
    if isinstance(tokenizer_or_encoded, EncodedSplit):
        enc = tokenizer_or_encoded
        if examples is not None:
            raise ValueError("pass either an EncodedSplit or a tokenizer and examples")
    else:
        if examples is None:
            raise ValueError("examples are required with a tokenizer")
        enc = encode_split(tokenizer_or_encoded, examples)
    B, C = len(enc), enc.num_candidates
    if B == 0:
        return torch.zeros((0, C))
    batch_size = max(1, int(batch_size))
    out: list[torch.Tensor | None]
    if fast_path and enc.single_token:
        seqs = [ctxs[0] for ctxs in enc.contexts]
        lengths = [len(s) for s in seqs]
        order = sorted(range(B), key=lambda i: -lengths[i])
        out = [None] * B
        for b in _progress(_batches(order, lengths, batch_size, max_tokens), progress):
            qs = [[lengths[i] - 1] for i in b]
            # One query position per example; all candidates' tokens read from it.
            res = _forward_logprobs_multi(model, [seqs[i] for i in b], qs,
                                          [[k[0] for k in enc.continuations[i]] for i in b],
                                          enc.pad_id, enc.padding_side)
            for i, r in zip(b, res):
                out[i] = r
        return torch.stack(out)                                   # type: ignore[arg-type]
    flat = [(i, k) for i in range(B) for k in range(C)]
    seqs = [enc.contexts[i][k] + enc.continuations[i][k][:-1] for i, k in flat]
    queries = [list(range(len(enc.contexts[i][k]) - 1, len(s))) for (i, k), s in zip(flat, seqs)]
    targets = [enc.continuations[i][k] for i, k in flat]
    lengths = [len(s) for s in seqs]
    order = sorted(range(len(flat)), key=lambda j: -lengths[j])
    vals: list[torch.Tensor | None] = [None] * len(flat)
    for b in _progress(_batches(order, lengths, batch_size, max_tokens), progress):
        res = _forward_logprobs(model, [seqs[j] for j in b], [queries[j] for j in b],
                                [targets[j] for j in b], enc.pad_id, enc.padding_side)
        for j, r in zip(b, res):
            vals[j] = r.mean()
    return torch.stack(vals).view(B, C)                          # type: ignore[arg-type]


def _progress(batches, label: str | None):
    if label is None:
        return batches
    import sys
    from tqdm.auto import tqdm
    batches = list(batches)
    return tqdm(batches, desc=label, unit="batch", leave=False, file=sys.stderr, dynamic_ncols=True)


def _forward_logprobs_multi(model, inputs, queries, cand_tokens, pad_id, padding_side):
    """Like :func:`_forward_logprobs` with one query per sequence scoring several tokens."""
    dev = _device(model)
    ids, mask, pos, offs = _pad(inputs, pad_id, padding_side)
    cols = torch.tensor([offs[i] + q[0] for i, q in enumerate(queries)], dtype=torch.long)
    logits, cols = _logits_at(model, ids, mask, pos, cols)
    sel = logits[torch.arange(len(inputs), device=dev), cols.to(dev)].float()   # (n, V)
    lp = torch.log_softmax(sel, dim=-1)
    tok = torch.tensor(cand_tokens, dtype=torch.long, device=dev)     # (n, C)
    return list(lp.gather(-1, tok))


def classification_loss(scores: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over candidates, the scores being the logits (MeZO train_as_classification)."""
    return F.cross_entropy(scores.float(), gold.to(scores.device).long())


def task_loss(scores: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """The training loss of a task: cross-entropy over the candidates (classification), or, with
    one candidate (SFT), the mean over examples of the target's mean token negative log-likelihood."""
    if scores.shape[-1] == 1:
        return -scores.float()[:, 0].mean()
    return classification_loss(scores, gold)


def metric_name(encoded: "EncodedSplit") -> str:
    """``accuracy`` for a classification split (>= 2 candidates), ``loss`` for an SFT split."""
    return "accuracy" if encoded.num_candidates >= 2 else "loss"


def predictions(scores: torch.Tensor) -> torch.Tensor:
    return scores.argmax(dim=-1)


def accuracy(scores: torch.Tensor, gold: torch.Tensor) -> float:
    """Fraction of examples whose highest-scoring candidate is the gold one."""
    if len(gold) == 0:
        return float("nan")
    return (predictions(scores).cpu() == gold.cpu()).double().mean().item()


def make_loss_fn(encoded_train: EncodedSplit, batch_size: int | None = None,
                 max_tokens: int | None = None) -> Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]:
    """``loss_fn(model, indices) -> scalar``: mean :func:`task_loss` of those training examples.

    ``indices`` is a 1-D LongTensor of example indices (the core's mini-batch); the whole
    mini-batch is scored in forwards of at most ``batch_size`` sequences (default: all at once).
    """
    def loss_fn(model: torch.nn.Module, indices: torch.Tensor) -> torch.Tensor:
        sub = encoded_train.subset(indices)
        bs = batch_size or max(1, len(sub) * max(1, sub.num_candidates))
        return task_loss(candidate_scores(model, sub, batch_size=bs, max_tokens=max_tokens), sub.gold)
    loss_fn.encoded = encoded_train          # type: ignore[attr-defined]
    return loss_fn


@torch.no_grad()
def evaluate(model: torch.nn.Module, encoded_split: EncodedSplit, batch_size: int = 16,
             max_tokens: int | None = None, return_scores: bool = False, metric: str | None = None,
             progress: str | None = None):
    """``metric`` of ``model`` on an encoded split (eval mode, no gradients): ``accuracy``, or
    ``loss`` (the mean :func:`task_loss`); default :func:`metric_name` of the split."""
    metric = metric or metric_name(encoded_split)
    if metric not in ("accuracy", "loss"):
        raise ValueError(f"unknown metric {metric!r}; valid: accuracy, loss")
    was_training = model.training
    model.eval()
    try:
        scores = candidate_scores(model, encoded_split, batch_size=batch_size, max_tokens=max_tokens,
                                  progress=progress)
    finally:
        model.train(was_training)
    value = accuracy(scores, encoded_split.gold) if metric == "accuracy" else \
        float(task_loss(scores, encoded_split.gold)) if len(scores) else float("nan")
    return (value, scores) if return_scores else value


__all__ = ["EncodedSplit", "encode_pair", "encode_split", "candidate_scores", "classification_loss",
           "task_loss", "metric_name", "predictions", "accuracy", "make_loss_fn", "evaluate"]
