"""Provenance of every number in REPORT.md.

The report is written as a *skeleton* in which each number is a marker ``⟦k⟧``; entry k of the
ledger says which files and keys it was read from, which operation of
:mod:`paper_figures.derive` turned them into a value, and how it was formatted.  ``render``
substitutes the markers and writes ``REPORT.md`` plus ``REPORT.sources.json`` (the skeleton and
the entries).  :func:`verify` (used by the driver at the end and by CI) checks that

1. substituting the entries into the skeleton gives REPORT.md exactly;
2. every entry's text equals the value recomputed from its files (read afresh) by its operation;
3. outside the markers the skeleton holds no standalone number (digits glued to letters or
   hyphens, as in ``SST-2``, ``smollm2-135m``, ``P1``, file names, are names, not numbers).

Paths in the ledger are relative to the report's directory (the ``--out`` folder).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

from hybridopt.io import write_json, write_text

from . import derive

MARK = re.compile(r"\u27e6(\d+)\u27e7")
#: a standalone number: not glued to a letter, digit, underscore, hyphen, dot or slash on the left,
#: nor to a letter/digit/underscore/hyphen on the right
NUMBER = re.compile(r"(?<![A-Za-z0-9_\-./\u27e6])[0-9]+(?:[.,][0-9]+)*(?![A-Za-z0-9_\-\u27e7])")
LINK_TARGET = re.compile(r"\]\([^)]*\)")


def get_key(data: Any, key: str) -> Any:
    """``data`` at a dotted key (``'dev_accuracy.best'``, ``'runs.0.eps'``; ``''`` is the whole)."""
    if key == "":
        return data
    parts = key.split(".")
    i = 0
    while i < len(parts):
        if isinstance(data, list):
            data = data[int(parts[i])]
            i += 1
            continue
        j = i + 1   # a dict key may itself contain dots ("run:sst2@opt-1.3b/hybrid"): take the shortest match
        while ".".join(parts[i:j]) not in data and j < len(parts):
            j += 1
        data = data[".".join(parts[i:j])]
        i = j
    return data


def fmt_value(value: Any, fmt: str) -> str:
    """Format a value; ``None`` (and NaN) print as ``n/a``; ``fmt='json'`` dumps indented JSON;
    ``fmt='str'`` prints ``str(value)``; other formats are ``format`` specs (``'.1%'``, ``'d'``)."""
    if fmt == "json":
        return json.dumps(value, indent=1, sort_keys=False)
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    if fmt == "str":
        return str(value)
    if fmt.endswith("d"):
        value = int(round(value))
    return format(value, fmt)


class Ledger:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.entries: list[dict[str, Any]] = []
        self._cache: dict[str, Any] = {}

    def load(self, file: str) -> Any:
        if file not in self._cache:
            self._cache[file] = json.loads((self.root / file).read_text(encoding="utf-8"))
        return self._cache[file]

    def rel(self, path: str | Path) -> str:
        p = Path(path)
        try:
            return p.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return p.as_posix()

    def _arg(self, a: Any) -> Any:
        """One argument of an operation: ``[file, key]`` gives that value, a list of such pairs
        gives the list of their values (one per seed, say)."""
        if len(a) == 2 and isinstance(a[0], str) and isinstance(a[1], str):
            return get_key(self.load(a[0]), a[1])
        return [self._arg(x) for x in a]

    def compute(self, op: str, args: Sequence[Any], kwargs: dict | None = None) -> Any:
        return derive.OPS[op](*[self._arg(a) for a in args], **(kwargs or {}))

    def _args(self, args: Sequence[Any]) -> list[Any]:
        def norm(a):
            if len(a) == 2 and isinstance(a[0], (str, Path)) and isinstance(a[1], str):
                return [self.rel(a[0]), a[1]]
            return [norm(x) for x in a]
        return [norm(a) for a in args]

    def calc(self, args: Sequence[Any], fmt: str = ".4g", op: str = "get", kwargs: dict | None = None) -> str:
        """Marker for ``op(*args, **kwargs)`` formatted with ``fmt``; each argument is a
        ``(file, key)`` pair or a list of pairs (see :meth:`_arg`)."""
        args = self._args(args)
        value = self.compute(op, args, kwargs)
        self.entries.append({"op": op, "args": args, "kwargs": kwargs or {}, "fmt": fmt,
                             "text": fmt_value(value, fmt)})
        return f"\u27e6{len(self.entries) - 1}\u27e7"

    def num(self, file: str | Path, key: str, fmt: str = ".4g", op: str = "get", kwargs: dict | None = None,
            more: Sequence[tuple[str | Path, str]] = ()) -> str:
        """Marker for ``op(file[key], *more..., **kwargs)`` formatted with ``fmt``."""
        return self.calc([(file, key), *more], fmt, op, kwargs)

    def value(self, args: Sequence[Any], op: str = "get", kwargs: dict | None = None) -> Any:
        """The value itself, for the report's layout only (which rows exist); a printed verdict
        is always a marker of its own (``calc(..., fmt="str", op="verdict_...")``)."""
        return self.compute(op, self._args(args), kwargs)

    def substitute(self, skeleton: str) -> str:
        return MARK.sub(lambda m: self.entries[int(m.group(1))]["text"], skeleton)

    def render(self, skeleton: str, report: str | Path) -> Path:
        report = Path(report)
        write_text(report, self.substitute(skeleton))
        write_json(report.with_suffix(".sources.json"),
                   {"schema": "hybridopt.report-sources/1", "root": ".", "skeleton": skeleton,
                    "entries": self.entries})
        return report


def stray_numbers(skeleton: str) -> list[str]:
    """Standalone numbers in the skeleton outside markers and link targets."""
    text = LINK_TARGET.sub("]()", MARK.sub(" ", skeleton))
    return [m.group(0) for m in NUMBER.finditer(text)]


def verify(report: str | Path) -> list[str]:
    """Problems with ``report`` and its ``.sources.json`` (empty list: every number is traced)."""
    report = Path(report)
    src = report.with_suffix(".sources.json")
    if not report.is_file() or not src.is_file():
        return [f"missing {report if not report.is_file() else src}"]
    side = json.loads(src.read_text(encoding="utf-8"))
    led = Ledger(report.parent)
    led.entries = side["entries"]
    problems = []
    if led.substitute(side["skeleton"]) != report.read_text(encoding="utf-8"):
        problems.append("REPORT.md differs from its skeleton with the recorded numbers substituted")
    fresh = Ledger(report.parent)
    for i, e in enumerate(side["entries"]):
        try:
            text = fmt_value(fresh.compute(e["op"], e["args"], e["kwargs"]), e["fmt"])
        except Exception as ex:  # noqa: BLE001 - report any failure as a problem
            problems.append(f"entry {i} ({e['op']} {e['args']}): cannot recompute: {ex!r}")
            continue
        if text != e["text"]:
            problems.append(f"entry {i} ({e['op']} {e['args']}): report says {e['text']!r}, files give {text!r}")
    stray = stray_numbers(side["skeleton"])
    if stray:
        problems.append(f"numbers in the report text that come from no file: {stray[:20]}")
    return problems
