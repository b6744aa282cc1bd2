"""Regenerate the shipped task subsets in ``benchmarks/data`` from the original files.

Usage (from the repository root)::

    python benchmarks/data/make_subsets.py --src ../shared/data [--out benchmarks/data]

The output is a pure function of the source files and the seed: the permutation is a
sort by ``sha256("{seed}:{task}:{source file}:{row}")``, which does not depend on the
numpy/Python version, and the JSONL is written with fixed separators, UTF-8 and ``\\n``.
Running the script again therefore reproduces the shipped files bit for bit.

Protocol (MeZO, Malladi et al. 2023): training and dev examples are disjoint samples of
the original *train* split; the test set comes from the original *validation* split
(the official test labels are hidden).  Sizes:

* SST-2       1000 train / 500 dev from train.tsv; test = all 872 rows of dev.tsv.
* WinoGrande  1000 train / 500 dev from train_m.jsonl; test = 1000 of the 1267 rows of dev.jsonl.
* WSC         train.jsonl has 554 rows but only 279 distinct sentences (one row per
              candidate span), so it is split by *sentence*: whole sentence groups go to
              dev (in permuted order) until it holds >= 100 rows, the rest is train
              (no sentence is in both); test = all 104 rows of val.jsonl.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

SEED = 0
SCHEMA_VERSION = 1

# Expected sha256 of the sources (from each SOURCE.md in shared/data).
SOURCES = {
    "sst2/train.tsv": "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
    "sst2/dev.tsv": "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0",
    "wsc/train.jsonl": "0ffaa3fd8d21e58a0805962565d1619aa4819bc3d034255777f606f801ae5a42",
    "wsc/val.jsonl": "e5c685ea4bdc347354036a28176459f6feeb0b6870375ecfb3d6ddb1f0e28bef",
    "winogrande/train_m.jsonl": "b02e7d92b5e44147ee4d1879fbf0e484510053f06c50a6fa6400265058f3ed42",
    "winogrande/dev.jsonl": "1aeac79cf46a3dcbe59a71ca7e5372a1490cde2b4ae2387dc56f00378104d2e8",
}
SIZES = {
    "sst2": {"train": 1000, "dev": 500, "test": None},        # None: the whole source split
    "winogrande": {"train": 1000, "dev": 500, "test": 1000},
    "wsc": {"train": None, "dev": 100, "test": None},         # dev: at least 100, whole sentences
}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def permutation(n: int, seed: int, task: str, source: str) -> list[int]:
    """A version-independent pseudo-random permutation of range(n)."""
    def key(i: int) -> bytes:
        return hashlib.sha256(f"{seed}:{task}:{source}:{i}".encode()).digest()
    return sorted(range(n), key=key)


def dumps(rec: dict) -> str:
    return json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n"


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---- per-task readers (normalised schema) -------------------------------------------------

def read_sst2(path: Path, split: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header != ["sentence", "label"]:
            raise ValueError(f"{path}: unexpected header {header}")
        for lineno, line in enumerate(f, start=2):
            sentence, label = line.rstrip("\n").split("\t")
            rows.append({"id": f"{split}-{lineno}", "sentence": sentence.strip(), "label": int(label)})
    return rows


def read_wsc(path: Path) -> list[dict]:
    out = []
    for r in read_jsonl(path):
        t = r["target"]
        out.append({"id": int(r["idx"]), "text": r["text"],
                    "span1_text": t["span1_text"], "span1_index": int(t["span1_index"]),
                    "span2_text": t["span2_text"], "span2_index": int(t["span2_index"]),
                    "label": int(bool(r["label"]))})
    return out


def read_winogrande(path: Path) -> list[dict]:
    return [{"id": r["qID"], "sentence": r["sentence"], "option1": r["option1"],
             "option2": r["option2"], "label": int(r["answer"]) - 1} for r in read_jsonl(path)]


# ---- splitting -----------------------------------------------------------------------------

def split_plain(rows: list[dict], task: str, source: str, n_train: int, n_dev: int):
    perm = permutation(len(rows), SEED, task, source)
    if n_train + n_dev > len(rows):
        raise ValueError(f"{source}: {len(rows)} rows < {n_train}+{n_dev}")
    return [rows[i] for i in perm[:n_train]], [rows[i] for i in perm[n_train:n_train + n_dev]]


def sample_test(rows: list[dict], task: str, source: str, n: int | None):
    if n is None or n >= len(rows):
        return list(rows)
    keep = sorted(permutation(len(rows), SEED, task, source)[:n])   # source order
    return [rows[i] for i in keep]


def split_grouped(rows: list[dict], task: str, source: str, min_dev: int, key: str):
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(r[key], []).append(i)
    names = list(groups)
    perm = permutation(len(names), SEED, task, source)
    dev_groups: set[str] = set()
    n_dev = 0
    for g in perm:
        if n_dev >= min_dev:
            break
        dev_groups.add(names[g])
        n_dev += len(groups[names[g]])
    # Train in permuted order of rows; dev likewise.
    order = permutation(len(rows), SEED, task, source + "#rows")
    train = [rows[i] for i in order if rows[i][key] not in dev_groups]
    dev = [rows[i] for i in order if rows[i][key] in dev_groups]
    return train, dev


def build(src: Path) -> dict[str, dict[str, list[dict]]]:
    for rel, digest in SOURCES.items():
        got = sha256_file(src / rel)
        if got != digest:
            raise ValueError(f"{src / rel}: sha256 {got} != expected {digest}")
    out: dict[str, dict[str, list[dict]]] = {}
    s = SIZES["sst2"]
    tr, dv = split_plain(read_sst2(src / "sst2/train.tsv", "train"), "sst2", "sst2/train.tsv",
                         s["train"], s["dev"])
    out["sst2"] = {"train": tr, "dev": dv, "test": read_sst2(src / "sst2/dev.tsv", "dev")}
    s = SIZES["winogrande"]
    tr, dv = split_plain(read_winogrande(src / "winogrande/train_m.jsonl"), "winogrande",
                         "winogrande/train_m.jsonl", s["train"], s["dev"])
    te = sample_test(read_winogrande(src / "winogrande/dev.jsonl"), "winogrande",
                     "winogrande/dev.jsonl", s["test"])
    out["winogrande"] = {"train": tr, "dev": dv, "test": te}
    tr, dv = split_grouped(read_wsc(src / "wsc/train.jsonl"), "wsc", "wsc/train.jsonl",
                           SIZES["wsc"]["dev"], key="text")
    out["wsc"] = {"train": tr, "dev": dv, "test": read_wsc(src / "wsc/val.jsonl")}
    return out


SPLIT_SOURCES = {
    "sst2": {"train": "sst2/train.tsv", "dev": "sst2/train.tsv", "test": "sst2/dev.tsv"},
    "winogrande": {"train": "winogrande/train_m.jsonl", "dev": "winogrande/train_m.jsonl",
                   "test": "winogrande/dev.jsonl"},
    "wsc": {"train": "wsc/train.jsonl", "dev": "wsc/train.jsonl", "test": "wsc/val.jsonl"},
}


def write(data: dict[str, dict[str, list[dict]]], out: Path) -> dict:
    manifest = {"schema_version": SCHEMA_VERSION, "seed": SEED,
                "permutation": "sorted(range(n), key=sha256(f'{seed}:{task}:{source}:{i}'))",
                "tasks": {}}
    for task, splits in data.items():
        (out / task).mkdir(parents=True, exist_ok=True)
        entry = {"splits": {}}
        for split, rows in splits.items():
            path = out / task / f"{split}.jsonl"
            text = "".join(dumps(r) for r in rows)
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_bytes(text.encode("utf-8"))
            os.replace(tmp, path)
            labels = [r["label"] for r in rows]
            src = SPLIT_SOURCES[task][split]
            entry["splits"][split] = {
                "file": f"{task}/{split}.jsonl", "rows": len(rows),
                "label_counts": {str(k): labels.count(k) for k in sorted(set(labels))},
                "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                "source": src, "source_sha256": SOURCES[src]}
        manifest["tasks"][task] = entry
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                       encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=here.parents[1] / ".." / "shared" / "data",
                    help="folder with sst2/, wsc/, winogrande/ original files")
    ap.add_argument("--out", type=Path, default=here, help="output folder (default: this folder)")
    args = ap.parse_args(argv)
    if not args.src.is_dir():
        print(f"source folder {args.src} not found", file=sys.stderr)
        return 2
    manifest = write(build(args.src), args.out)
    for task, e in manifest["tasks"].items():
        print(task, {k: v["rows"] for k, v in e["splits"].items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
