"""Every bad input gets one clear line, exit code 2, no traceback and nothing written.

The table in docs/BAD_INPUTS.md is generated from CASES (``hybridopt finetune``) and OTHER_CASES
(``export``, ``summarize``, ``grid``, ``lr-scan``, ``reproduce``) by running them (``HYBRIDOPT_WRITE_DOCS=1 pytest
tests/bench/test_bad_inputs.py``); a test fails if it is stale.  They run as on a CPU-only torch
with an empty Hugging Face cache, so the messages are the same on every machine.
"""
import contextlib
import io
import json
import os
import re
import socket
from pathlib import Path

import pytest
import torch

import hybridopt.llm

from hybridopt.benchmarks import lr_scan, pipeline
from hybridopt.benchmarks.cli import export_main, finetune_main, grid_main, summarize_main
from hybridopt.io import CHECKED_MAGIC, RunLock, save_checked

DOC = Path(__file__).resolve().parents[2] / "docs" / "BAD_INPUTS.md"
#: long enough for every shipped SST-2 prompt under tiny-llama's tokenizer (the longest needs 181 tokens), so
#: that a prompt that does not fit is an error only in the row that tests it
FIT = 192
BASE = ["--task", "sst2", "--method", "hybrid", "--model", "tiny-llama", "--steps", "2", "--max-length", str(FIT)]


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


def _model_dirs(tmp: Path) -> None:
    """Local model directories that transformers could not load (or only with a misleading error)."""
    llama = json.dumps({"model_type": "llama"})
    for name, config, files in (("junkmodel", "this is not json", ()), ("notype", json.dumps({"hidden": 8}), ()),
                                ("alien", json.dumps({"model_type": "alien"}), ()),
                                ("noweights", llama, ("tokenizer.json",)),
                                ("notok", llama, ("model.safetensors",))):
        (tmp / name).mkdir()
        (tmp / name / "config.json").write_text(config)
        for f in files:
            (tmp / name / f).write_text("{}")


def _run_dirs(tmp: Path) -> None:
    """Run directories: damaged checkpoints, a checkpoint of another configuration, selected.pt
    files that cannot be rebuilt."""
    from hybridopt.benchmarks.config import build_config

    (tmp / "damaged").mkdir()
    (tmp / "damaged" / "checkpoint.pt").write_bytes(CHECKED_MAGIC + b"\x00" * 64)
    (tmp / "damaged" / "checkpoint.prev.pt").write_bytes(b"")
    other = build_config("sst2", "hybrid", None, {"model": "tiny-llama", "steps": 3, "max_length": FIT}).to_dict()
    (tmp / "other").mkdir()
    save_checked(tmp / "other" / "checkpoint.pt", {"format": 3, "config": other, "step": 1})
    (tmp / "badsel").mkdir()
    (tmp / "badsel" / "selected.pt").write_bytes(CHECKED_MAGIC + b"garbage" * 10)
    (tmp / "nosnap").mkdir()
    save_checked(tmp / "nosnap" / "selected.pt", {"format": 3, "config": other, "best_step": 4, "zo_base": 4,
                                                   "fo_params": [], "zo_log": []})
    (tmp / "locked").mkdir()


def _files(tmp: Path) -> None:
    _task_files(tmp)
    _model_dirs(tmp)
    _run_dirs(tmp)
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
    ("--device cuda on a CPU-only torch", ["--device", "cuda"], "device 'cuda' is not available: this torch is built without CUDA"),
    ("device with a bad index", ["--device", "cuda:x"], "unknown device 'cuda:x'; valid: cpu, cuda, cuda:N"),
    ("--out below an existing file", ["--out", "{tmp}/a_file/run"], "--out '{tmp}/a_file/run': '{tmp}/a_file' is a file, not a directory"),
    ("--out in a pseudo file system (/proc)", ["--out", "/proc/hybridopt-run"], "cannot create files in '/proc'"),
    ("--out in a file system that refuses new files (/sys)", ["--out", "/sys/hybridopt-run"], "cannot create files in '/sys'"),
    ("unknown peft kind", ["--peft", "adapterfusion"], "--peft 'adapterfusion': not a peft kind (lora, prefix) nor a peft config file (JSON)"),
    ("model directory whose config.json is junk", ["--model", "{tmp}/junkmodel"], "model directory '{tmp}/junkmodel': config.json is not valid JSON"),
    ("model config.json without model_type", ["--model", "{tmp}/notype"], "config.json has no 'model_type'"),
    ("model config.json with an unknown model_type", ["--model", "{tmp}/alien"], "names model_type 'alien', which this transformers does not know"),
    ("model directory without weights", ["--model", "{tmp}/noweights"], "holds no weights (model.safetensors or pytorch_model.bin)"),
    ("model directory without a tokenizer", ["--model", "{tmp}/notok"], "holds no tokenizer"),
    ("preset not in the local Hugging Face cache", ["--model", "opt-1.3b"], "model 'opt-1.3b' (facebook/opt-1.3b) is not in the local Hugging Face cache"),
    ("negative number in exponent form (--lr-x -1e-3)", ["--lr-x", "-1e-3"], "optimizer: lr_x must be a finite number > 0, got -0.001"),
    ("negative smoothing radius", ["--mu", "-1e-3"], "optimizer: mu must be a finite number > 0, got -0.001"),
    ("-inf learning rate", ["--lr-y", "-inf"], "optimizer: lr_y must be a finite number > 0, got -inf"),
    ("negative seed", ["--seed", "-1"], "seed must be an integer >= 0, got -1"),
    ("negative LoRA alpha", ["--lora-alpha", "-16"], "peft.alpha must be > 0, got -16"),
    ("negative LoRA rank", ["--lora-r", "-4"], "peft.r must be an integer >= 1, got -4"),
    ("--max-length shorter than a prompt", ["--max-length", "8"], "prompts do not fit max_length=8 (the longest needs "),
    ("--truncate-prompts with a --max-length that cuts most prompts by more than 3/4",
     ["--max-length", "8", "--truncate-prompts"], "max_length=8 keeps less than a quarter of most "),
    ("snapshot interval < 1", ["--snapshot-every", "0"], "snapshot_every must be an integer >= 1, got 0"),
    ("negative checkpoint interval in minutes", ["--checkpoint-minutes", "-5"], "checkpoint_minutes must be a finite number >= 0, got -5.0"),
    ("--resume when every checkpoint is damaged", ["--resume", "--out", "{tmp}/damaged"], "--resume: no usable checkpoint in '{tmp}/damaged' (checkpoint.pt: checksum mismatch (the file is truncated or damaged); checkpoint.prev.pt: empty file); pass --overwrite to start the run again"),
    ("--resume with another configuration", ["--resume", "--out", "{tmp}/other"], "--resume with a different configuration than the checkpoint's (differs in: steps)"),
    ("--out in use by another process", ["--out", "{tmp}/locked"], "'{tmp}/locked' is in use by process <pid> on <host>, since <time>"),
]

# (command, what is wrong, argv after "hybridopt <command>", expected message fragment); grid gets BASE too
OTHER_CASES = [
    ("export", "run directory missing", ["{tmp}/nope", "--out", "{tmp}/exp"], "run directory '{tmp}/nope' does not exist"),
    ("export", "run directory of an unfinished run", ["{tmp}/unfinished", "--out", "{tmp}/exp"], "holds no selected checkpoint (selected.pt): not a finished run"),
    ("export", "--out exists", ["{tmp}/finished", "--out", "{tmp}/nomodel"], "--out '{tmp}/nomodel' already exists; pass --overwrite to replace it"),
    ("export", "--out below an existing file", ["{tmp}/finished", "--out", "{tmp}/a_file/exp"], "--out '{tmp}/a_file/exp': '{tmp}/a_file' is a file, not a directory"),
    ("export", "--out in a pseudo file system", ["{tmp}/finished", "--out", "/proc/hybridopt-exp"], "cannot create files in '/proc'"),
    ("export", "damaged selected.pt", ["{tmp}/badsel", "--out", "{tmp}/exp"], "badsel/selected.pt: checksum mismatch (the file is truncated or damaged) (selected.pt cannot be rebuilt; run the fine-tuning again)"),
    ("export", "selected.pt whose ZO snapshot is missing", ["{tmp}/nosnap", "--out", "{tmp}/exp"], "nosnap/snapshots/zo-00000004.safetensors is missing (selected.pt cannot be rebuilt"),
    ("summarize", "folder without result files", ["{tmp}/nomodel"], "no result.json under '{tmp}/nomodel'"),
    ("summarize", "path missing", ["{tmp}/none"], "'{tmp}/none' does not exist"),
    ("summarize", "result file that is not JSON", ["{tmp}/bad.json"], "bad.json: not a readable result file"),
    ("summarize", "JSON file that is not a result", ["{tmp}/finished/result.json"], "not a result file of hybridopt finetune or grid (no dev_metric)"),
    ("summarize", "--out below an existing file", ["{tmp}/finished", "--out", "{tmp}/a_file/table.md"], "--out '{tmp}/a_file'"),
    ("grid", "no --grid", [], "no --grid given"),
    ("grid", "grid axis with an unknown key", ["--grid", "lr=1"], "--grid 'lr=1': expected KEY=v1,v2,... with KEY one of lr_x, lr_y, mu, q"),
    ("grid", "grid values that are not numbers", ["--grid", "lr_x=a"], "--grid 'lr_x=a': values must be numbers"),
    ("grid", "negative value in a grid", ["--grid", "lr_x=-1e-3,1e-3"], "optimizer: lr_x must be a finite number > 0, got -0.001"),
    ("grid", "grid axis for a block the method lacks", ["--method", "fo-peft", "--grid", "mu=1e-3"], "method 'fo-peft' has no zeroth-order block; option(s) mu do not apply"),
    ("grid", "--out below an existing file", ["--grid", "lr_x=1e-3", "--out", "{tmp}/a_file/g"], "'{tmp}/a_file' is a file, not a directory"),
    ("lr-scan", "--lr-x that is not a list of numbers", ["--lr-x", "1e-4,big"], "--lr-x '1e-4,big': comma-separated positive numbers expected"),
    ("lr-scan", "--lr-x with a negative value", ["--lr-x", "1e-4,-1e-3"], "--lr-x '1e-4,-1e-3': comma-separated positive numbers expected"),
    ("lr-scan", "--diverge-factor not above 1", ["--lr-x", "1e-4", "--diverge-factor", "1"], "--diverge-factor 1.0: a number above 1 expected"),
    ("lr-scan", "a finetune option that is wrong", ["--lr-x", "1e-4", "--batch-size", "0"], "batch_size must be an integer >= 1, got 0"),
    ("lr-scan", "a method without a ZO block", ["--lr-x", "1e-4", "--method", "fo-peft"], "method 'fo-peft' has no zeroth-order block; option(s) lr_x do not apply"),
    ("reproduce", "unknown scale", ["--scale", "huge", "--out", "{tmp}/rep"], "unknown scale 'huge'"),
]
MAINS = {"finetune": finetune_main, "export": export_main, "summarize": summarize_main, "grid": grid_main,
         "lr-scan": lr_scan.main, "reproduce": pipeline.main}


def _run(command, argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = MAINS[command](argv)
        except SystemExit as e:  # argparse
            code = e.code
    return code, err.getvalue()


def _argv(command, case_args, tmp):
    # argparse keeps the last occurrence of an option, so a case's options override BASE
    args = [a.replace("{tmp}", str(tmp)) for a in case_args]
    if command not in ("finetune", "grid", "lr-scan"):
        return args
    return BASE + args + ([] if "--out" in args else ["--out", str(tmp / "run")])


ALL = [("finetune", what, args, want) for what, args, want in CASES] + OTHER_CASES


LOADED: list = []          # load_model calls while the cases run (there must be none)
_real_load = hybridopt.llm.load_model


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    import huggingface_hub.constants

    tmp = tmp_path_factory.mktemp("bad")
    _files(tmp)
    before = sorted(p.relative_to(tmp) for p in tmp.rglob("*"))
    with pytest.MonkeyPatch.context() as mp, RunLock(tmp / "locked"):   # another process is working in locked/
        mp.setattr(torch.backends.cuda, "is_built", lambda: False)     # as on a CPU-only torch
        mp.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty-hf-cache")))
        mp.delenv("HYBRIDOPT_ALLOW_DOWNLOAD", raising=False)
        mp.setattr(hybridopt.llm, "load_model", lambda *a, **kw: LOADED.append(a) or _real_load(*a, **kw))
        before_lock = sorted(p.relative_to(tmp) for p in tmp.rglob("*"))
        got = [(command, what, *_run(command, _argv(command, args, tmp))) for command, what, args, _ in ALL]
        after = sorted(p.relative_to(tmp) for p in tmp.rglob("*"))
    return tmp, got, before_lock == after and before == sorted(p.relative_to(tmp) for p in tmp.rglob("*"))


def _normal(text: str, tmp: Path) -> str:
    """A message with what differs between machines and runs (scratch folder, pid, host, time) named."""
    text = text.replace(str(tmp), "…").replace(f"process {os.getpid()} ", "process <pid> ")
    text = text.replace(f" on {socket.gethostname()},", " on <host>,")
    return re.sub(r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "since <time>", text)


@pytest.mark.parametrize("i", range(len(ALL)))
def test_bad_input_gets_one_clear_line(i, outcomes):
    tmp, got, _ = outcomes
    command, what, code, err = got[i]
    expected = ALL[i][3].replace("{tmp}", str(tmp))
    assert code == 2, (command, what, code, err)
    assert expected in _normal(err, tmp).replace("…", str(tmp)), (what, err)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 or err.startswith("usage:"), err


def test_nothing_written(outcomes):
    assert outcomes[2], "a rejected run wrote files"


def test_no_model_loaded(outcomes):
    assert LOADED == [], "a rejected run loaded a model"


def test_doc_table_is_current(outcomes):
    tmp, got, _ = outcomes
    rows = ["| # | command | bad input | message (exit code 2) |", "|---|---|---|---|"]
    for k, (command, what, code, err) in enumerate(got, 1):
        line = _normal(err.strip().splitlines()[-1], tmp).replace("|", "\\|")
        rows.append(f"| {k} | {command} | {what} | `{line}` |")
    table = "\n".join(rows) + "\n"
    head = ("# Bad input and the message it gets\n\nEach row was produced by running `hybridopt <command>` "
            "with that input (tests/bench/test_bad_inputs.py; `…` is a scratch folder; pid, host and time are "
            "named where they differ between runs; run as on a CPU-only torch with an empty Hugging Face cache). "
            "Every one exits with code 2 before any model is loaded, prints one line and writes nothing (a data "
            "file with several bad records gets one such line per record, tests/bench/test_task_files.py). "
            "Damaged checkpoints that a previous one replaces, full disks, a model that collapses and a grid "
            "whose winner is the untrained model get a warning instead (tests/bench/test_reliability.py).\n\n")
    if os.environ.get("HYBRIDOPT_WRITE_DOCS"):
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(head + table)
    assert DOC.read_text() == head + table, "docs/BAD_INPUTS.md is stale: rerun with HYBRIDOPT_WRITE_DOCS=1"
