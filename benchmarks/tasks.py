"""Benchmark tasks: registry, validated loading of the shipped splits, templates, verbalizers.

Every task turns a record into an :class:`Example`: one ``(context, continuation)`` pair per
candidate answer plus the gold index.  A candidate's score is the (length-normalised)
log-likelihood of its continuation given its context (see :mod:`benchmarks.scoring`).

Templates (MeZO ``templates.py``; WinoGrande as in Trinh & Le 2018 / lm-eval-harness):

* ``sst2``        context ``"{sentence} It was"``; continuations ``" terrible"`` (label 0),
                  ``" great"`` (label 1).  Shared context, single-word verbalizer.
* ``wsc``         context ``"{text}\\nIn the previous sentence, does the pronoun \\"{span2.lower()}\\"
                  refer to {span1}? Yes or No?\\n"``; continuations ``"No"`` (label 0 = false),
                  ``"Yes"`` (label 1 = true).  Shared context.
* ``winogrande``  *partial scoring*: the blank ``_`` is filled with each option and only
                  the text *after* the blank is scored.  For option k the context is
                  ``sentence[:i] + option_k`` (``i`` = position of ``_``) and the continuation
                  is ``" " + sentence[i+1:].strip()``, the same for both options.  The
                  candidates differ in their contexts and share the continuation, so the
                  comparison asks which filled-in prefix makes the rest of the sentence more
                  likely; since both continuations have the same tokens, length normalisation
                  does not change the argmax (it only rescales the training loss).

Shipped splits live in ``benchmarks/data/<task>/{train,dev,test}.jsonl`` (see the README
and ``MANIFEST.json`` there).  :func:`load_split` validates every line and reports the
file and line number of the first problem.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

DATA_DIR = Path(__file__).resolve().parent / "data"
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Example:
    """One scored item: ``candidates[k] = (context, continuation)``; ``gold`` indexes them."""

    candidates: tuple[tuple[str, str], ...]
    gold: int

    def __post_init__(self) -> None:
        if len(self.candidates) < 2:
            raise ValueError("an Example needs at least two candidates")
        if not 0 <= self.gold < len(self.candidates):
            raise ValueError(f"gold index {self.gold} out of range for {len(self.candidates)} candidates")
        for ctx, cont in self.candidates:
            if not isinstance(ctx, str) or not isinstance(cont, str) or not cont:
                raise ValueError("candidates must be (str context, non-empty str continuation)")


# ---- record validation ---------------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _str(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


def _check_sst2(r: dict) -> str | None:
    if not _str(r["sentence"]):
        return "'sentence' must be a non-empty string"
    return None


def _check_wsc(r: dict) -> str | None:
    for k in ("text", "span1_text", "span2_text"):
        if not _str(r[k]):
            return f"{k!r} must be a non-empty string"
    for k in ("span1_index", "span2_index"):
        if not _is_int(r[k]) or r[k] < 0:
            return f"{k!r} must be a non-negative integer"
    return None


def _check_winogrande(r: dict) -> str | None:
    for k in ("sentence", "option1", "option2"):
        if not _str(r[k]):
            return f"{k!r} must be a non-empty string"
    s = r["sentence"]
    if s.count("_") != 1:
        return "'sentence' must contain exactly one '_' blank"
    if not s[s.index("_") + 1:].strip():
        return "'sentence' has no text after the blank to score"
    return None


# ---- templates -----------------------------------------------------------------------------

def _sst2_example(r: dict) -> Example:
    ctx = f"{r['sentence']} It was"
    return Example(candidates=((ctx, " terrible"), (ctx, " great")), gold=r["label"])


def _wsc_example(r: dict) -> Example:
    ctx = (f"{r['text']}\nIn the previous sentence, does the pronoun \"{r['span2_text'].lower()}\" "
           f"refer to {r['span1_text']}? Yes or No?\n")
    return Example(candidates=((ctx, "No"), (ctx, "Yes")), gold=r["label"])


def _winogrande_example(r: dict) -> Example:
    s = r["sentence"]
    i = s.index("_")
    cont = " " + s[i + 1:].strip()
    return Example(candidates=((s[:i] + r["option1"], cont), (s[:i] + r["option2"], cont)),
                   gold=r["label"])


@dataclass(frozen=True)
class Task:
    name: str
    keys: tuple[str, ...]                       # required keys besides "label"
    num_labels: int
    verbalizer: tuple[str, ...] | None          # candidate continuations if fixed, else None
    check: Callable[[dict], str | None]
    to_example: Callable[[dict], Example]
    description: str = ""

    def example(self, record: dict) -> Example:
        return self.to_example(record)

    def examples(self, records: Sequence[dict]) -> list[Example]:
        return [self.to_example(r) for r in records]


TASKS: dict[str, Task] = {
    "sst2": Task("sst2", ("sentence",), 2, (" terrible", " great"), _check_sst2, _sst2_example,
                 "GLUE SST-2 sentiment, MeZO prompt '{sentence} It was' + terrible/great"),
    "wsc": Task("wsc", ("text", "span1_text", "span1_index", "span2_text", "span2_index"), 2,
                ("No", "Yes"), _check_wsc, _wsc_example,
                "SuperGLUE WSC coreference, MeZO/PromptSource yes-no prompt"),
    "winogrande": Task("winogrande", ("sentence", "option1", "option2"), 2, None,
                       _check_winogrande, _winogrande_example,
                       "WinoGrande v1.1, partial scoring of the text after the blank"),
}


def get_task(name: str | Task) -> Task:
    if isinstance(name, Task):
        return name
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}") from None


def split_path(task: str | Task, split: str, data_dir: str | os.PathLike | None = None) -> Path:
    t = get_task(task)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    root = Path(data_dir) if data_dir is not None else DATA_DIR
    # A user folder may hold the task folder (like the shipped data) or the files directly.
    p = root / t.name / f"{split}.jsonl"
    if not p.exists() and (root / f"{split}.jsonl").exists():
        p = root / f"{split}.jsonl"
    return p


def validate_record(task: str | Task, rec: Any) -> str | None:
    """Return a description of what is wrong with ``rec``, or None if it is valid."""
    t = get_task(task)
    if not isinstance(rec, dict):
        return f"expected a JSON object, got {type(rec).__name__}"
    missing = [k for k in t.keys + ("label",) if k not in rec]
    if missing:
        return f"missing key(s) {', '.join(repr(k) for k in missing)}"
    lab = rec["label"]
    if not _is_int(lab) or not 0 <= lab < t.num_labels:
        return f"bad label {lab!r} (expected an integer in 0..{t.num_labels - 1})"
    return t.check(rec)


def load_records(task: str | Task, split: str, data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Read and validate one split; raises ``ValueError('<file>:<line>: ...')`` on bad data."""
    t = get_task(task)
    path = split_path(t, split, data_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no {split} split for task {t.name!r}")
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
            err = validate_record(t, rec)
            if err is not None:
                raise ValueError(f"{path}:{lineno}: {err}")
            out.append(rec)
    if not out:
        raise ValueError(f"{path}: no records")
    return out


def load_split(task: str | Task, split: str, data_dir: str | os.PathLike | None = None) -> list[Example]:
    """Validated :class:`Example` list of ``task``'s ``split`` (shipped data unless ``data_dir``)."""
    t = get_task(task)
    return t.examples(load_records(t, split, data_dir))


__all__ = ["Example", "Task", "TASKS", "SPLITS", "DATA_DIR", "get_task", "load_split",
           "load_records", "validate_record", "split_path"]
