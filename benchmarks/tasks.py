"""Tasks as data: a task file (JSON) names the data files, the fields, the prompt, and either the
candidate answers of each label (classification by candidate scoring) or a target (SFT loss).

Every task turns a record into an :class:`Example`: one ``(context, continuation)`` pair per
candidate plus the gold index.  A candidate's score is the length-normalised log-likelihood of
its continuation given its context (:mod:`benchmarks.scoring`); a classification task trains on
the cross-entropy over its candidates and is evaluated by accuracy, an SFT task (one candidate:
the target) trains on and is evaluated by the target's mean token negative log-likelihood.

The built-in tasks are task files shipped beside their data (``data/<name>.task.json``) and go
through the same code as a user's own file (:data:`BUILTIN`):

* ``sst2``        ``"{sentence} It was"`` + ``" terrible"`` (label 0) / ``" great"`` (label 1)  (MeZO)
* ``wsc``         ``"{text}\\nIn the previous sentence, does the pronoun \\"{span2_text|lower}\\" refer
                  to {span1_text}? Yes or No?\\n"`` + ``"No"`` (0) / ``"Yes"`` (1)  (MeZO/PromptSource)
* ``winogrande``  partial scoring: the blank ``_`` is filled with each option and only the text
                  after it is scored: candidate k = (``sentence[:i] + option_k``, ``" " +
                  sentence[i+1:].strip()``); the candidates share their continuation, so length
                  normalisation does not change the argmax (Trinh & Le 2018, lm-eval-harness).

Task file keys (``docs`` of the format: the README, "Your own data"):

``name``         the task's name in results (default: the file name without ``.task.json``/``.json``)
``description``  free text
``data``         a directory holding ``train``/``dev``/``test`` files (``.jsonl``, ``.csv`` or ``.tsv``;
                 ``test`` optional), one data file (split by ``split``), or ``{"train": F, "dev": F,
                 "test": F}``; relative paths are relative to the task file
``split``        for one data file: ``{"dev": 0.1, "test": 0.1, "seed": 0}`` (fractions of the records,
                 drawn by a seeded, version-independent hash order; these are the defaults)
``fields``       optional types of record fields: ``text`` (non-empty string, the default of every
                 field a template uses), ``string`` (may be empty), ``integer`` (>= 0)
``label``        the field holding the label (default ``"label"``); values are matched as strings,
                 so ``1`` in JSONL and ``"1"`` in CSV are the same label
``prompt``       a template: the shared context of the ``verbalizer`` candidates, or the context of
                 the ``target``
``verbalizer``   ``{label: continuation template}``, in candidate order
``candidates``   ``{label: {"context": template, "continuation": template}}`` (per-candidate contexts)
``target``       a template: the text the model learns to continue the prompt with (SFT)

Templates are text with ``{field}`` or ``{field|filter|...}`` placeholders (``{{``/``}}`` for
braces); filters: ``lower``, ``upper``, ``strip``, ``before_blank``, ``after_blank`` (the text
before/after the one ``_`` of the field).

Everything is validated before a model is loaded: a bad task file is one line naming the file and
the key; every bad record is one line ``<file>:<line>: <what is wrong>``.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

DATA_DIR = Path(__file__).resolve().parent / "data"
SPLITS = ("train", "dev", "test")
#: the built-in tasks: task files shipped in ``data/``, found by name
BUILTIN = ("sst2", "winogrande", "wsc")
FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv"}
FIELD_TYPES = ("text", "string", "integer")
TASK_KEYS = ("name", "description", "data", "split", "fields", "label", "prompt", "verbalizer",
             "candidates", "target")
#: at most this many bad records are listed, one line each
MAX_ERRORS = 20


class TaskError(ValueError):
    """A task file or its data is invalid; the message has one line per problem (``lines``: all of
    them, the message shows the first :data:`MAX_ERRORS`)."""

    def __init__(self, message: str, lines: list[str] | None = None) -> None:
        self.lines = lines if lines is not None else message.splitlines()
        super().__init__(message)


@dataclass(frozen=True)
class Example:
    """One scored item: ``candidates[k] = (context, continuation)``; ``gold`` indexes them.
    A classification example has >= 2 candidates, an SFT example one (its target)."""

    candidates: tuple[tuple[str, str], ...]
    gold: int

    def __post_init__(self) -> None:
        if len(self.candidates) < 1:
            raise ValueError("an Example needs at least one candidate")
        if not 0 <= self.gold < len(self.candidates):
            raise ValueError(f"gold index {self.gold} out of range for {len(self.candidates)} candidates")
        for ctx, cont in self.candidates:
            if not isinstance(ctx, str) or not isinstance(cont, str) or not cont:
                raise ValueError("candidates must be (str context, non-empty str continuation)")


# ---- templates -------------------------------------------------------------------------------

def _one_blank(name: str, v: str) -> int:
    if v.count("_") != 1:
        raise _RecordError(f"{name!r} must contain exactly one '_' blank")
    return v.index("_")


FILTERS = {
    "lower": lambda name, v: v.lower(),
    "upper": lambda name, v: v.upper(),
    "strip": lambda name, v: v.strip(),
    "before_blank": lambda name, v: v[:_one_blank(name, v)],
    "after_blank": lambda name, v: v[_one_blank(name, v) + 1:],
}
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class _RecordError(ValueError):
    """What is wrong with one record (the caller adds file and line)."""


@dataclass(frozen=True)
class Template:
    """Text with ``{field|filter|...}`` placeholders, parsed once."""

    source: str
    parts: tuple[Any, ...]                      # str literal or (field, (filters...))

    @classmethod
    def parse(cls, source: Any, where: str) -> "Template":
        if not isinstance(source, str):
            raise TaskError(f"{where} must be a string template, got {source!r}")
        parts: list[Any] = []
        pos = 0
        for m in _PLACEHOLDER.finditer(source):
            parts.append(source[pos:m.start()])
            pos = m.end()
            tok = m.group(0)
            if tok in ("{{", "}}"):
                parts.append(tok[0])
            elif m.group(1) is None:
                raise TaskError(f"{where}: unbalanced {tok!r} in template {source!r} (write {tok * 2} for a literal brace)")
            else:
                name, *filters = [s.strip() for s in m.group(1).split("|")]
                if not name:
                    raise TaskError(f"{where}: empty placeholder {{}} in template {source!r}")
                bad = [f for f in filters if f not in FILTERS]
                if bad:
                    raise TaskError(f"{where}: unknown filter {bad[0]!r} in template {source!r}; "
                                    f"valid: {', '.join(FILTERS)}")
                parts.append((name, tuple(filters)))
        parts.append(source[pos:])
        return cls(source, tuple(p for p in parts if p != ""))

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p[0] for p in self.parts if isinstance(p, tuple)))

    def render(self, record: Mapping[str, Any]) -> str:
        out = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
                continue
            name, filters = p
            value = str(record[name])
            for f in filters:
                value = FILTERS[f](name, value)
            out.append(value)
        return "".join(out)


# ---- the task ----------------------------------------------------------------------------------

def _label_key(v: Any) -> str | None:
    """Labels are compared as strings: 1 (JSON) and "1" (CSV) are one label; bools/floats are not labels."""
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        return None
    return str(v)


@dataclass(frozen=True)
class Task:
    """A validated task: where its data is and how a record becomes an :class:`Example`."""

    name: str
    kind: str                                    # "classification" or "sft"
    candidates: tuple[tuple[str, Template, Template], ...]   # (label, context, continuation); sft: one
    label_field: str | None
    field_types: Mapping[str, str]
    data: Any = None                             # str or {split: str}, as in the file
    split: Mapping[str, Any] = field(default_factory=dict)
    root: Path = Path(".")
    description: str = ""
    path: Path | None = None                     # the task file, if any

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], root: str | os.PathLike = ".", where: str = "task",
                  default_name: str | None = None) -> "Task":
        """Validate a task description (the JSON object of a task file); ``root`` resolves
        relative data paths.  Raises :class:`TaskError` naming ``where`` and the key."""
        if not isinstance(spec, Mapping):
            raise TaskError(f"{where} must hold a JSON object, got {type(spec).__name__}")
        unknown = [k for k in spec if k not in TASK_KEYS]
        if unknown:
            raise TaskError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(TASK_KEYS)}")
        name = spec.get("name", default_name)
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]*", name or ""):
            raise TaskError(f"{where}: 'name' must be a word of letters, digits, '_', '-', '.', got {name!r}")
        desc = spec.get("description", "")
        if not isinstance(desc, str):
            raise TaskError(f"{where}: 'description' must be a string")
        modes = [k for k in ("verbalizer", "candidates", "target") if k in spec]
        if len(modes) != 1:
            raise TaskError(f"{where}: give exactly one of 'verbalizer' or 'candidates' (classification) "
                            f"or 'target' (SFT){'; got ' + ', '.join(modes) if modes else ''}")
        mode = modes[0]
        if mode == "candidates" and "prompt" in spec:
            raise TaskError(f"{where}: 'prompt' does not combine with 'candidates' (each candidate has its context)")
        if mode != "candidates" and "prompt" not in spec:
            raise TaskError(f"{where}: {mode!r} needs a 'prompt' template")
        if mode == "target" and "label" in spec:
            raise TaskError(f"{where}: 'label' does not apply to an SFT task ('target')")
        cands: list[tuple[str, Template, Template]] = []
        if mode == "target":
            cands.append(("", Template.parse(spec["prompt"], f"{where}: 'prompt'"),
                          Template.parse(spec["target"], f"{where}: 'target'")))
        else:
            table = spec[mode]
            if not isinstance(table, Mapping) or len(table) < 2:
                raise TaskError(f"{where}: {mode!r} must map at least two labels to their candidates")
            for label, c in table.items():
                if mode == "verbalizer":
                    ctx = Template.parse(spec["prompt"], f"{where}: 'prompt'")
                    cont = Template.parse(c, f"{where}: verbalizer[{label!r}]")
                else:
                    if not isinstance(c, Mapping) or set(c) != {"context", "continuation"}:
                        raise TaskError(f"{where}: candidates[{label!r}] must be an object with 'context' "
                                        "and 'continuation' templates")
                    ctx = Template.parse(c["context"], f"{where}: candidates[{label!r}].context")
                    cont = Template.parse(c["continuation"], f"{where}: candidates[{label!r}].continuation")
                if not cont.fields and not cont.source.strip():
                    raise TaskError(f"{where}: the continuation of label {label!r} is empty")
                cands.append((str(label), ctx, cont))
            seen: dict[str, str] = {}
            for lab, ctx, cont in cands:
                key = cont.source if mode == "verbalizer" else ctx.source + "\x00" + cont.source
                if cont.fields or (mode == "candidates" and ctx.fields):
                    continue
                if key in seen:
                    raise TaskError(f"{where}: labels {seen[key]!r} and {lab!r} have the same candidate {cont.source!r}")
                seen[key] = lab
        label_field = None if mode == "target" else spec.get("label", "label")
        if label_field is not None and not (isinstance(label_field, str) and label_field):
            raise TaskError(f"{where}: 'label' must be a field name")
        types = spec.get("fields", {})
        if not isinstance(types, Mapping):
            raise TaskError(f"{where}: 'fields' must map field names to a type ({', '.join(FIELD_TYPES)})")
        for k, t in types.items():
            if t not in FIELD_TYPES:
                raise TaskError(f"{where}: fields[{k!r}] = {t!r} is not a type; valid: {', '.join(FIELD_TYPES)}")
        used = {f for _, c, k in cands for f in c.fields + k.fields}
        if label_field in used:
            raise TaskError(f"{where}: the label field {label_field!r} is used in a template")
        field_types = {**{f: "text" for f in sorted(used)}, **dict(types)}
        split = spec.get("split", {})
        data = spec.get("data")
        _check_data(data, split, where)
        return cls(name=name, kind="sft" if mode == "target" else "classification", candidates=tuple(cands),
                   label_field=label_field, field_types=field_types, data=data, split=dict(split),
                   root=Path(root), description=desc)

    # -- properties ----------------------------------------------------------------------------
    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(lab for lab, _, _ in self.candidates) if self.kind == "classification" else ()

    @property
    def metric(self) -> str:
        """The dev/test metric: ``accuracy`` (classification, higher is better) or ``loss``
        (SFT: mean token negative log-likelihood of the target, lower is better)."""
        return "accuracy" if self.kind == "classification" else "loss"

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"

    @property
    def required_fields(self) -> tuple[str, ...]:
        return tuple(self.field_types) + ((self.label_field,) if self.label_field else ())

    # -- records -------------------------------------------------------------------------------
    def check(self, rec: Any) -> str | None:
        """What is wrong with ``rec`` (a dict of field values), or None if it makes an Example."""
        try:
            self.example(rec)
        except (_RecordError, ValueError) as e:
            return str(e)
        return None

    def example(self, rec: Any) -> Example:
        """The :class:`Example` of one record; ``ValueError`` says what is wrong with it."""
        if not isinstance(rec, dict):
            raise _RecordError(f"expected a JSON object, got {type(rec).__name__}")
        missing = [k for k in self.required_fields if k not in rec]
        if missing:
            raise _RecordError(f"missing key(s) {', '.join(repr(k) for k in missing)}")
        for k, t in self.field_types.items():
            v = rec[k]
            if t in ("text", "string") and not isinstance(v, str):
                raise _RecordError(f"{k!r} must be a string, got {v!r}")
            if t == "text" and not v.strip():
                raise _RecordError(f"{k!r} must be a non-empty string")
            if t == "integer" and not (_label_key(v) is not None and str(v).isdigit()):
                raise _RecordError(f"{k!r} must be a non-negative integer, got {v!r}")
        gold = 0
        if self.kind == "classification":
            lab = _label_key(rec[self.label_field])
            if lab not in self.labels:
                raise _RecordError(f"bad label {rec[self.label_field]!r} (expected one of: {', '.join(self.labels)})")
            gold = self.labels.index(lab)
        pairs = []
        for lab, ctx, cont in self.candidates:
            c, k = ctx.render(rec), cont.render(rec)
            if not k.strip():
                what = "the target" if self.kind == "sft" else f"the continuation of label {lab!r}"
                raise _RecordError(f"{what} is empty for this record")
            pairs.append((c, k))
        return Example(candidates=tuple(pairs), gold=gold)

    def examples(self, records: Sequence[dict]) -> list[Example]:
        return [self.example(r) for r in records]

    # -- data files ----------------------------------------------------------------------------
    def files(self, data_dir: str | os.PathLike | None = None) -> dict[str, Path | None]:
        """Data file of each split; ``None`` for a split that has no file: the test split is
        optional, and with one data file (``"data": "FILE"``) the splits are cut from ``train``'s
        file (:meth:`single_file`).  ``data_dir`` replaces the task's data location with a folder
        holding ``<name>/<split>.<ext>`` or ``<split>.<ext>``."""
        if data_dir is not None:
            root = Path(data_dir)
            return {s: _find_split(root / self.name if (root / self.name).is_dir() else root, s) for s in SPLITS}
        data = self.data
        if isinstance(data, str):
            p = _resolve(self.root, data)
            if p.is_dir():
                return {s: _find_split(p, s) for s in SPLITS}
            if not p.is_file():
                raise TaskError(f"task {self.name!r}: data {str(p)!r} does not exist")
            _format(p)
            return {"train": p, "dev": None, "test": None}
        out = {}
        for s in SPLITS:
            p = _resolve(self.root, data[s]) if s in data else None
            if p is not None and not p.is_file():
                raise TaskError(f"task {self.name!r}: {s} data file {str(p)!r} does not exist")
            out[s] = p
            if p is not None:
                _format(p)
        return out

    def single_file(self, data_dir: str | os.PathLike | None = None) -> bool:
        """True when the splits are cut from one data file (by ``split``)."""
        return data_dir is None and isinstance(self.data, str) and _resolve(self.root, self.data).is_file()

    def load_records(self, split: str, data_dir: str | os.PathLike | None = None) -> list[dict]:
        """Validated records of ``split`` (``[]`` for an absent test split); raises
        :class:`TaskError` with one ``<file>:<line>: ...`` line per bad record."""
        return [r for r, _ in self._located(split, data_dir)]

    def _located(self, split: str, data_dir=None) -> list[tuple[dict, str]]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        files = self.files(data_dir)
        if self.single_file(data_dir):               # one data file, split by a seeded hash order
            rows = _split_rows(_read(files["train"]), self.split)[split]
        elif files[split] is None:
            if split == "test":
                return []
            where = Path(data_dir) if data_dir is not None else _resolve(self.root, self.data)
            raise TaskError(f"{where}: no {split} split ({' or '.join(split + e for e in FORMATS)})")
        else:
            rows = _read(files[split])
            if not rows:
                raise TaskError(f"{files[split]}: no records")
        path = files["train"] if self.single_file(data_dir) else files[split]
        if path.suffix.lower() in (".csv", ".tsv") and rows:     # a missing column: one line, not one per row
            absent = [f for f in self.required_fields if f not in rows[0][0]]
            if absent:
                raise TaskError(f"{path}:1: no column {', '.join(repr(f) for f in absent)} (the header has: "
                                f"{', '.join(rows[0][0])})")
        errors = [f"{where}: {err}" for rec, where in rows if (err := self.check(rec)) is not None]
        if errors:
            raise _errors(errors)
        return rows

    def load_split(self, split: str, data_dir: str | os.PathLike | None = None) -> list[Example]:
        """Validated :class:`Example` list of ``split``."""
        return self.examples(self.load_records(split, data_dir))


def _resolve(root: Path, p: str) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else root / q


def _check_data(data: Any, split: Any, where: str) -> None:
    if data is None:
        raise TaskError(f"{where}: 'data' is missing (a directory, one data file, or {{train, dev, test}} files)")
    if isinstance(data, Mapping):
        bad = [k for k in data if k not in SPLITS]
        if bad:
            raise TaskError(f"{where}: data has unknown split {bad[0]!r}; valid: {', '.join(SPLITS)}")
        for s in ("train", "dev"):
            if s not in data:
                raise TaskError(f"{where}: data needs a {s!r} file")
        for s, p in data.items():
            if not isinstance(p, str) or not p:
                raise TaskError(f"{where}: data[{s!r}] must be a path")
    elif not isinstance(data, str) or not data:
        raise TaskError(f"{where}: 'data' must be a path or an object {{train, dev, test}}")
    if not isinstance(split, Mapping):
        raise TaskError(f"{where}: 'split' must be an object like {{\"dev\": 0.1, \"test\": 0.1, \"seed\": 0}}")
    if split and not isinstance(data, str):
        raise TaskError(f"{where}: 'split' applies only when 'data' is one file")
    bad = [k for k in split if k not in ("dev", "test", "seed")]
    if bad:
        raise TaskError(f"{where}: unknown split option {bad[0]!r}; valid: dev, test, seed")
    fr = [split.get(k, 0.1) for k in ("dev", "test")]
    if any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1 for f in fr) or sum(fr) >= 1:
        raise TaskError(f"{where}: split fractions must be numbers in [0, 1) summing to < 1, got {dict(split)}")
    if fr[0] <= 0:
        raise TaskError(f"{where}: split.dev must be > 0 (model selection needs a dev split)")
    seed = split.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TaskError(f"{where}: split.seed must be an integer >= 0, got {seed!r}")


def _find_split(folder: Path, split: str) -> Path | None:
    if not folder.is_dir():
        raise TaskError(f"data folder {str(folder)!r} does not exist")
    found = [folder / f"{split}{ext}" for ext in FORMATS if (folder / f"{split}{ext}").is_file()]
    if len(found) > 1:
        raise TaskError(f"{folder}: both {found[0].name} and {found[1].name}; keep one {split} file")
    return found[0] if found else None


def _format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise TaskError(f"{path}: unsupported data format {path.suffix or '(none)'!r}; valid: {', '.join(FORMATS)}")
    return fmt


def _read(path: Path) -> list[tuple[Any, str]]:
    """``(record, "<file>:<line>")`` for every record of a JSONL/CSV/TSV file.  A file that cannot
    be parsed at all (bad JSON, bad CSV header) raises one line per bad line."""
    fmt = _format(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise TaskError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise TaskError(f"{path}: cannot be read ({e.strerror})") from None
    if fmt == "jsonl":
        rows, errors = [], []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((json.loads(line), f"{path}:{lineno}"))
            except json.JSONDecodeError as e:
                errors.append(f"{path}:{lineno}: malformed JSON ({e.msg})")
        if errors:
            raise _errors(errors)
        return rows
    reader = csv.reader(text.splitlines(keepends=True), delimiter="," if fmt == "csv" else "\t", strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise TaskError(f"{path}: empty file (a {fmt.upper()} file needs a header row)") from None
    except csv.Error as e:
        raise TaskError(f"{path}:1: malformed {fmt.upper()} ({e})") from None
    header = [h.strip() for h in header]
    if not all(header):
        raise TaskError(f"{path}:1: the header row has an empty column name")
    dup = [h for i, h in enumerate(header) if h in header[:i]]
    if dup:
        raise TaskError(f"{path}:1: column {dup[0]!r} appears twice in the header")
    rows, errors = [], []
    while True:
        start = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            errors.append(f"{path}:{start}: malformed {fmt.upper()} ({e})")
            break
        if not values or (len(values) == 1 and not values[0].strip()):
            continue
        if len(values) != len(header):
            errors.append(f"{path}:{start}: {len(values)} fields, the header has {len(header)}")
            continue
        rows.append((dict(zip(header, values)), f"{path}:{start}"))
    if errors:
        raise _errors(errors)
    return rows


def _split_rows(rows: list[tuple[Any, str]], split: Mapping[str, Any]) -> dict[str, list]:
    """Seeded split of one file: records ordered by ``sha256(f"{seed}:{index}")`` (independent of
    Python/numpy versions); dev takes the first ``round(n·dev)`` (at least 1), test the next, train
    the rest; each split keeps the file's order."""
    n = len(rows)
    seed = split.get("seed", 0)
    order = sorted(range(n), key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest())
    sizes = [max(1, round(n * split.get("dev", 0.1)))]
    test_frac = split.get("test", 0.1)
    sizes.append(max(1, round(n * test_frac)) if test_frac > 0 else 0)
    if n - sum(sizes) < 1:
        path = rows[0][1].rsplit(":", 1)[0] if rows else "data"
        raise TaskError(f"{path}: {n} records are too few to split into train/dev/test")
    dev, test = set(order[:sizes[0]]), set(order[sizes[0]:sizes[0] + sizes[1]])
    return {"dev": [r for i, r in enumerate(rows) if i in dev],
            "test": [r for i, r in enumerate(rows) if i in test],
            "train": [r for i, r in enumerate(rows) if i not in dev and i not in test]}


def _errors(errors: list[str]) -> TaskError:
    shown = errors[:MAX_ERRORS]
    if len(errors) > MAX_ERRORS:
        shown.append(f"... and {len(errors) - MAX_ERRORS} more bad records")
    return TaskError("\n".join(shown), lines=errors)


# ---- finding tasks -------------------------------------------------------------------------------

def builtin_path(name: str) -> Path:
    return DATA_DIR / f"{name}.task.json"


def load_task(task: "str | os.PathLike | Task | Mapping[str, Any]") -> Task:
    """A built-in task by name (:data:`BUILTIN`), a task file (JSON; or a folder holding
    ``task.json``), a dict in the task-file format (data paths relative to the working directory),
    or a :class:`Task` (returned as is)."""
    if isinstance(task, Task):
        return task
    if isinstance(task, Mapping):
        return Task.from_dict(task, root=Path.cwd(), where="task")
    key = str(task)
    if key in BUILTIN:
        path = builtin_path(key)
    else:
        path = Path(key).expanduser()
        if path.is_dir() and (path / "task.json").is_file():
            path = path / "task.json"
        if not path.is_file():
            hint = "a task file" if key.endswith(".json") or os.sep in key else "a task file (JSON)"
            raise TaskError(f"unknown task {key!r}: not a built-in task ({', '.join(BUILTIN)}) or {hint}"
                            + (" (no such file)" if hint == "a task file" else ""))
    where = f"task file {str(path)!r}"
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TaskError(f"{where} is not valid JSON: line {e.lineno}: {e.msg}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TaskError(f"{where} cannot be read: {e}") from None
    stem = path.parent.name if path.name == "task.json" else re.sub(r"(\.task)?\.json$", "", path.name)
    t = Task.from_dict(spec, root=path.parent, where=where, default_name=stem)
    return Task(**{**t.__dict__, "path": path})


def get_task(name: "str | Task") -> Task:
    """Alias of :func:`load_task` (name, task file or Task)."""
    return load_task(name)


def load_records(task, split: str, data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Read and validate one split (see :meth:`Task.load_records`)."""
    return load_task(task).load_records(split, data_dir)


def load_split(task, split: str, data_dir: str | os.PathLike | None = None) -> list[Example]:
    """Validated :class:`Example` list of ``task``'s ``split`` (the task's data unless ``data_dir``)."""
    return load_task(task).load_split(split, data_dir)


def validate_record(task, rec: Any) -> str | None:
    """A description of what is wrong with ``rec``, or None if it is valid."""
    return load_task(task).check(rec)


def load_splits(task, data_dir: str | os.PathLike | None = None,
                limits: Mapping[str, int | None] | None = None) -> dict[str, list[Example]]:
    """Every split, validated together: all bad records of all files are reported at once
    (one line each).  ``limits`` keeps the first N examples of a split."""
    t = load_task(task)
    out, errors = {}, []
    for s in SPLITS:
        try:
            recs = t.load_records(s, data_dir)
        except TaskError as e:      # a problem of one shared file is reported once, not once per split
            errors.extend(line for line in e.lines if line not in errors)
            continue
        lim = (limits or {}).get(s)
        out[s] = t.examples(recs[:lim] if lim is not None else recs)
    if errors:
        raise _errors(errors)
    return out


__all__ = ["BUILTIN", "DATA_DIR", "Example", "SPLITS", "Task", "TaskError", "Template", "builtin_path",
           "get_task", "load_records", "load_split", "load_splits", "load_task", "validate_record"]
