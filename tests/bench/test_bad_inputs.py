"""Every bad input gets one clear line, exit code 2, no traceback and nothing written.

The table in docs/BAD_INPUTS.md is generated from CASES by running them
(``HYBRIDOPT_WRITE_DOCS=1 pytest tests/bench/test_bad_inputs.py``); a test fails if it is stale.
"""
import contextlib
import io
import json
import os
from pathlib import Path

import pytest

from hybridopt.benchmarks.cli import finetune_main

DOC = Path(__file__).resolve().parents[2] / "docs" / "BAD_INPUTS.md"
BASE = ["--task", "sst2", "--method", "hybrid", "--model", "tiny-llama", "--steps", "2"]


NEWS = "headline,topic\nthe striker scored,sport\nrates went up,business\nthe keeper saved,sport\nshares fell,business\n"
TASK = {"data": "news.csv", "split": {"dev": 0.25, "test": 0.25}, "label": "topic", "prompt": "{headline} Topic:",
        "verbalizer": {"sport": " sport", "business": " business"}}


def _task(tmp: Path, name: str, csv: str | None = None, **change) -> None:
    """A task file ``{name}.task.json`` (and its CSV) differing from a valid one by ``change``."""
    spec = {k: v for k, v in {**TASK, **change}.items() if v is not None}
    if csv is not None:
        (tmp / f"{name}.csv").write_text(csv)
        spec["data"] = f"{name}.csv"
    (tmp / f"{name}.task.json").write_text(json.dumps(spec))


def _task_files(tmp: Path) -> None:
    (tmp / "news.csv").write_text(NEWS)
    (tmp / "notjson.task.json").write_text("{not json")
    (tmp / "list.task.json").write_text("[1]")
    _task(tmp, "typo", promt="{headline}")
    _task(tmp, "nomode", verbalizer=None)
    _task(tmp, "onelabel", verbalizer={"sport": " sport"})
    _task(tmp, "filter", prompt="{headline|title} Topic:")
    _task(tmp, "brace", prompt="{headline Topic:")
    _task(tmp, "same", verbalizer={"sport": " yes", "business": " yes"})
    _task(tmp, "nodata", data="missing.csv")
    (tmp / "news.txt").write_text(NEWS)
    _task(tmp, "format", data="news.txt")
    _task(tmp, "badsplit", split={"dev": 0.6, "test": 0.6})
    _task(tmp, "fields", csv=NEWS.replace("shares fell,business", "shares fell,business,extra"))
    _task(tmp, "column", csv=NEWS.replace("headline,", "title,"))
    _task(tmp, "label", csv=NEWS.replace("rates went up,business", "rates went up,finance"))
    _task(tmp, "empty", csv=NEWS.replace("the keeper saved,", ","))
    _task(tmp, "fewrows", csv="headline,topic\na,sport\nb,business\n")
    (tmp / "qa").mkdir()
    (tmp / "qa" / "train.jsonl").write_text(json.dumps({"q": "x", "a": "y"}) + "\n")
    (tmp / "qa.task.json").write_text(json.dumps({"data": "qa", "prompt": "{q}", "target": " {a}"}))
    (tmp / "sft").mkdir()
    for split, a in (("train", "   "), ("dev", "z")):
        (tmp / "sft" / f"{split}.jsonl").write_text(json.dumps({"q": "x", "a": "y"}) + "\n"
                                                    + json.dumps({"q": "x", "a": a}) + "\n")
    (tmp / "sft.task.json").write_text(json.dumps({"data": "sft", "fields": {"a": "string"}, "prompt": "{q}",
                                                   "target": "{a}"}))


def _files(tmp: Path) -> None:
    _task_files(tmp)
    (tmp / "bad.json").write_text("{not json")
    (tmp / "list.json").write_text("[1, 2]")
    (tmp / "unknown_key.json").write_text(json.dumps({"lr": 0.1}))
    (tmp / "unknown_opt.json").write_text(json.dumps({"optimizer": {"lr_z": 0.1}}))
    (tmp / "nomodel").mkdir()
    (tmp / "finished").mkdir()
    (tmp / "finished" / "result.json").write_text("{}")
    (tmp / "unfinished").mkdir()
    (tmp / "unfinished" / "checkpoint.pt").write_bytes(b"x")
    (tmp / "a_file").write_text("x")
    for name, line in (("malformed", "{oops"), ("missing_key", json.dumps({"sentence": "a"})),
                       ("bad_label", json.dumps({"sentence": "a", "label": 7}))):
        d = tmp / name / "sst2"
        d.mkdir(parents=True)
        good = json.dumps({"sentence": "fine .", "label": 1})
        for split in ("train", "dev", "test"):   # one bad record (in train): one line
            (d / f"{split}.jsonl").write_text(good + "\n" + good + "\n" + (line if split == "train" else good) + "\n")


# (what is wrong, argv after "hybridopt finetune" — {tmp} is a scratch folder, expected message fragment)
CASES = [
    ("unknown task", ["--task", "sst3"], "unknown task 'sst3': not a built-in task (sst2, winogrande, wsc) or a task file (JSON)"),
    ("task file missing", ["--task", "{tmp}/none.task.json"], "unknown task '{tmp}/none.task.json': not a built-in task (sst2, winogrande, wsc) or a task file (no such file)"),
    ("task file not JSON", ["--task", "{tmp}/notjson.task.json"], "task file '{tmp}/notjson.task.json' is not valid JSON: line 1"),
    ("task file not an object", ["--task", "{tmp}/list.task.json"], "must hold a JSON object, got list"),
    ("task file with an unknown key", ["--task", "{tmp}/typo.task.json"], "unknown key 'promt'; valid keys: name, description, data"),
    ("task file without labels or target", ["--task", "{tmp}/nomode.task.json"], "give exactly one of 'verbalizer' or 'candidates' (classification) or 'target' (SFT)"),
    ("task with a single label", ["--task", "{tmp}/onelabel.task.json"], "'verbalizer' must map at least two labels"),
    ("template with an unknown filter", ["--task", "{tmp}/filter.task.json"], "unknown filter 'title' in template"),
    ("template with an unbalanced brace", ["--task", "{tmp}/brace.task.json"], "unbalanced '{' in template"),
    ("two labels with the same candidate", ["--task", "{tmp}/same.task.json"], "labels 'sport' and 'business' have the same candidate ' yes'"),
    ("task's data file missing", ["--task", "{tmp}/nodata.task.json"], "task 'nodata': data '{tmp}/missing.csv' does not exist"),
    ("unsupported data format", ["--task", "{tmp}/format.task.json"], "news.txt: unsupported data format '.txt'"),
    ("split fractions too large", ["--task", "{tmp}/badsplit.task.json"], "split fractions must be numbers in [0, 1) summing to < 1"),
    ("CSV row with an extra field", ["--task", "{tmp}/fields.task.json"], "fields.csv:5: 3 fields, the header has 2"),
    ("CSV without a column the prompt uses", ["--task", "{tmp}/column.task.json"], "column.csv:1: no column 'headline' (the header has: title, topic)"),
    ("CSV record with an unknown label", ["--task", "{tmp}/label.task.json"], "label.csv:3: bad label 'finance' (expected one of: sport, business)"),
    ("CSV record with an empty text field", ["--task", "{tmp}/empty.task.json"], "empty.csv:4: 'headline' must be a non-empty string"),
    ("too few records to split", ["--task", "{tmp}/fewrows.task.json"], "fewrows.csv: 2 records are too few to split into train/dev/test"),
    ("data folder without a dev split", ["--task", "{tmp}/qa.task.json"], "qa: no dev split (dev.jsonl or dev.csv or dev.tsv)"),
    ("SFT record with an empty target", ["--task", "{tmp}/sft.task.json", "--n-train", "2", "--batch-size", "1"], "sft/train.jsonl:2: the target is empty for this record"),
    ("unknown method", ["--method", "mezo"], "unknown method 'mezo'; valid methods: fo-full, fo-peft, zo-full, zo-peft, hybrid"),
    ("unknown model name", ["--model", "gpt-5"], "unknown model 'gpt-5': not a preset"),
    ("model directory without config.json", ["--model", "{tmp}/nomodel"], "has no config.json"),
    ("unknown dtype", ["--dtype", "float8"], "unknown dtype 'float8'"),
    ("unknown device", ["--device", "tpu"], "unknown device 'tpu'"),
    ("missing peft config file", ["--peft", "{tmp}/nope.json"], "peft config file '{tmp}/nope.json' does not exist"),
    ("peft config file not JSON", ["--peft", "{tmp}/bad.json"], "is not readable JSON"),
    ("learning rate of the ZO block <= 0", ["--lr-x", "0"], "optimizer: lr_x must be a finite number > 0, got 0.0"),
    ("negative FO learning rate", ["--lr-y=-1e-3"], "optimizer: lr_y must be a finite number > 0, got -0.001"),
    ("smoothing radius mu <= 0", ["--mu", "0"], "optimizer: mu must be a finite number > 0"),
    ("q < 1", ["--q", "0"], "optimizer: q must be an integer >= 1, got 0"),
    ("unknown estimator", ["--estimator", "spsa"], "optimizer: estimator='spsa' is not valid; choose one of: paired, central, forward"),
    ("unknown FO optimizer", ["--fo-optimizer", "lion"], "fo_optimizer='lion' is not valid"),
    ("batch size < 1", ["--batch-size", "0"], "batch_size must be an integer >= 1, got 0"),
    ("steps < 1", ["--steps", "0"], "steps must be an integer >= 1, got 0"),
    ("eval interval < 1", ["--eval-every", "0"], "eval_every must be an integer >= 1, got 0"),
    ("n_train < 1", ["--n-train", "0"], "n_train must be an integer >= 1 or null, got 0"),
    ("batch larger than the training set", ["--n-train", "4", "--batch-size", "8"], "batch_size=8 exceeds n_train=4"),
    ("negative checkpoint interval", ["--checkpoint-every", "-1"], "checkpoint_every must be an integer >= 0"),
    ("missing config file", ["--config", "{tmp}/none.json"], "config file '{tmp}/none.json' does not exist"),
    ("config file not JSON", ["--config", "{tmp}/bad.json"], "is not valid JSON: line 1"),
    ("config file not an object", ["--config", "{tmp}/list.json"], "must hold a JSON object"),
    ("config file with an unknown key", ["--config", "{tmp}/unknown_key.json"], "unknown key 'lr'; valid keys:"),
    ("unknown optimizer option in a config file", ["--config", "{tmp}/unknown_opt.json"], "unknown optimizer option(s): lr_z"),
    ("ZO option for a method without ZO block", ["--method", "fo-peft", "--mu", "1e-3"], "method 'fo-peft' has no zeroth-order block; option(s) mu do not apply"),
    ("FO option for a method without FO block", ["--method", "zo-full", "--lr-y", "1e-3"], "method 'zo-full' has no first-order block; option(s) lr_y do not apply"),
    ("PEFT option for a full-model method", ["--method", "zo-full", "--peft", "prefix"], "method 'zo-full' uses no PEFT module"),
    ("LoRA rank with prefix tuning", ["--peft", "prefix", "--lora-r", "4"], "peft option r (LoRA rank) given with peft kind 'prefix'"),
    ("data folder missing", ["--data-dir", "{tmp}/nodata"], "data_dir '{tmp}/nodata' is not a directory"),
    ("malformed data line", ["--data-dir", "{tmp}/malformed"], "sst2/train.jsonl:3: malformed JSON"),
    ("data line missing a key", ["--data-dir", "{tmp}/missing_key"], "sst2/train.jsonl:3: missing key(s) 'label'"),
    ("data line with a bad label", ["--data-dir", "{tmp}/bad_label"], "sst2/train.jsonl:3: bad label 7"),
    ("--out holds a finished run", ["--out", "{tmp}/finished"], "already holds a finished run (result.json); pass --overwrite"),
    ("--out holds an unfinished run", ["--out", "{tmp}/unfinished"], "holds an unfinished run (checkpoint.pt); pass --resume"),
    ("--resume with nothing to resume", ["--resume"], "holds no checkpoint to resume from"),
    ("--out is a file", ["--out", "{tmp}/a_file"], "exists and is not a directory"),
    ("non-numeric value", ["--steps", "ten"], "argument --steps: invalid int value: 'ten'"),
]


def _run(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = finetune_main(argv)
        except SystemExit as e:  # argparse
            code = e.code
    return code, err.getvalue()


def _argv(case_args, tmp):
    # argparse keeps the last occurrence of an option, so a case's options override BASE
    args = [a.replace("{tmp}", str(tmp)) for a in case_args]
    return BASE + args + ([] if "--out" in args else ["--out", str(tmp / "run")])


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    _files(tmp)
    before = sorted(p.relative_to(tmp) for p in tmp.rglob("*"))
    got = [(what, *_run(_argv(args, tmp))) for what, args, _ in CASES]
    after = sorted(p.relative_to(tmp) for p in tmp.rglob("*"))
    return tmp, got, before == after


@pytest.mark.parametrize("i", range(len(CASES)))
def test_bad_input_gets_one_clear_line(i, outcomes):
    tmp, got, _ = outcomes
    what, code, err = got[i]
    expected = CASES[i][2].replace("{tmp}", str(tmp))
    assert code == 2, (what, code, err)
    assert expected in err, (what, err)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 or err.startswith("usage:"), err


def test_nothing_written(outcomes):
    assert outcomes[2], "a rejected run wrote files"


def test_doc_table_is_current(outcomes):
    tmp, got, _ = outcomes
    rows = ["| # | bad input | message (exit code 2) |", "|---|---|---|"]
    for k, (what, code, err) in enumerate(got, 1):
        line = err.strip().splitlines()[-1].replace(str(tmp), "…").replace("|", "\\|")
        rows.append(f"| {k} | {what} | `{line}` |")
    table = "\n".join(rows) + "\n"
    head = ("# Bad input and the message it gets\n\nEach row was produced by running `hybridopt finetune` "
            "with that input (tests/bench/test_bad_inputs.py; `…` is a scratch folder). Every one exits "
            "with code 2 before any model is loaded, prints one line and writes nothing (a data file with several "
            "bad records gets one such line per record, tests/bench/test_task_files.py).\n\n")
    if os.environ.get("HYBRIDOPT_WRITE_DOCS"):
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(head + table)
    assert DOC.read_text() == head + table, "docs/BAD_INPUTS.md is stale: rerun with HYBRIDOPT_WRITE_DOCS=1"
