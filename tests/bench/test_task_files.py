"""Tasks from the user's own files (CSV classification, JSONL SFT) through the CLI, and the export
of a finished run: reloaded with transformers (+ peft), it reproduces the trained dev loss bit for
bit, for every method, merged and unmerged."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import hybridopt as ho
from hybridopt.benchmarks import export, runner
from hybridopt.benchmarks.cli import export_main, finetune_main
from hybridopt.benchmarks.tasks import TaskError, load_task

TOPICS = [("the striker scored twice in the final", "sport"), ("the central bank raised interest rates", "business"),
          ("the goalkeeper saved a late penalty", "sport"), ("shares fell after the earnings report", "business"),
          ("the team won the league on goal difference", "sport"), ("the merger was approved by regulators", "business")]


def write_csv_task(folder: Path, n: int = 30) -> Path:
    """A topic classification task: one CSV (split by the task file) + a task file with its own prompt."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["headline,topic"] + [f'"{t} ({i})",{lab}' for i in range(n // len(TOPICS) + 1) for t, lab in TOPICS][:n + 1]
    (folder / "news.csv").write_text("\n".join(rows[:n + 1]) + "\n")
    task = {"name": "news", "data": "news.csv", "split": {"dev": 0.2, "test": 0.2, "seed": 0}, "label": "topic",
            "prompt": "Headline: {headline}\nTopic:", "verbalizer": {"sport": " sport", "business": " business"}}
    (folder / "news.task.json").write_text(json.dumps(task, indent=2))
    return folder / "news.task.json"


def write_sft_task(folder: Path) -> Path:
    """An SFT task: JSONL train/dev files in a folder, a prompt and a target template."""
    d = folder / "qa"
    d.mkdir(parents=True, exist_ok=True)
    for split, rng in (("train", range(12)), ("dev", range(12, 16))):
        with open(d / f"{split}.jsonl", "w") as f:
            for i in rng:
                f.write(json.dumps({"question": f"What is {i} plus 1?", "answer": str(i + 1)}) + "\n")
    task = {"data": "qa", "prompt": "Q: {question}\nA:", "target": " {answer}"}
    (folder / "qa.task.json").write_text(json.dumps(task))
    return folder / "qa.task.json"


TINY = ["--model", "tiny-llama", "--steps", "4", "--batch-size", "4", "--eval-every", "2", "--no-progress"]


def test_csv_classification_task_from_the_cli(tmp_path, capsys):
    task = write_csv_task(tmp_path / "data")
    t = load_task(task)
    assert t.name == "news" and t.labels == ("sport", "business") and t.metric == "accuracy"
    sizes = {s: len(t.load_records(s)) for s in ("train", "dev", "test")}
    assert sizes == {"train": 18, "dev": 6, "test": 6}
    ex = t.load_split("dev")[0]
    assert ex.candidates[0][0].startswith("Headline: ") and ex.candidates[0][0].endswith("\nTopic:")
    assert [c for _, c in ex.candidates] == [" sport", " business"]
    code = finetune_main(["--task", str(task), "--method", "hybrid", "--lr-x", "1e-3", "--lr-y", "1e-2",
                          "--out", str(tmp_path / "run"), *TINY])
    assert code == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "run" / "result.json").read_text())
    assert res["task"] == "news" and res["metric"] == "accuracy" and 0 <= res["test_accuracy"] <= 1
    assert res["config"]["task"] == str(task.resolve())
    events = [json.loads(line)["event"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert events == ["eval", "step", "step", "eval", "step", "step", "eval", "test"]


def test_jsonl_sft_task_from_the_cli(tmp_path, capsys):
    task = write_sft_task(tmp_path / "data")
    t = load_task(task)
    assert t.name == "qa" and t.kind == "sft" and t.metric == "loss" and t.load_records("test") == []
    assert t.load_split("train")[0].candidates == (("Q: What is 0 plus 1?\nA:", " 1"),)
    code = finetune_main(["--task", str(task), "--method", "fo-peft", "--lr-y", "3e-2", "--out",
                          str(tmp_path / "run"), *TINY])
    assert code == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "run" / "result.json").read_text())
    assert res["metric"] == "loss" and res["dev_metric"]["higher_is_better"] is False
    assert res["test_metric"] is None and res["dev_accuracy"] is None
    curve = [v for _, v in res["dev_curve"]]
    assert res["dev_metric"]["best"] == min(curve) < curve[0]          # the target loss went down
    assert "no test split" in capsys.readouterr().out


def _finished_run(tmp_path, method, **kw):
    from tests.bench.test_finetune import cfg_for
    cfg = cfg_for(method, steps=4, eval_every=2, n_dev=8,
                  optimizer={"lr_x": 5e-3, "lr_y": 5e-2, "mu": 1e-2, "fo_optimizer": "sgd", **kw})
    res = runner.run(cfg, tmp_path / "run", progress=False)
    return cfg, res


def test_bare_adapter_save_drops_the_base_update(tmp_path):
    """The issue's trap: hybrid changes the base; the adapter alone on the original base is another model."""
    _finished_run(tmp_path, "hybrid")
    rep = export.export_run(tmp_path / "run", tmp_path / "exp")
    assert rep["step"] > 0 and rep["exact"]
    assert rep["adapter_only_dev_loss"] != rep["trained_dev_loss"] == rep["reloaded_dev_loss"]


@pytest.mark.parametrize("merge", [False, True])
@pytest.mark.parametrize("method", ho.METHODS)
def test_export_round_trip_is_bit_exact(method, merge, tmp_path):
    cfg, res = _finished_run(tmp_path, method)
    _, s, step = runner.restore_selected(tmp_path / "run")
    assert step == res["dev_metric"]["step"]
    enc = s.dev
    trained = export.dev_loss(s.model, enc)
    out = tmp_path / "exp"
    if merge:                       # compare with the same merge done in memory: the round trip is exact
        merged = s.model.merge_and_unload() if hasattr(s.model, "merge_and_unload") else s.model
        want = export.dev_loss(merged, enc)
        export.export_model(merged, s.tokenizer, out)
    else:
        want = trained
        export.export_model(s.model, s.tokenizer, out)
    model, tok = export.load_exported(out)
    got = export.dev_loss(model, enc)
    assert got == want                                             # bit for bit
    if merge:
        assert got == pytest.approx(trained, rel=1e-5, abs=1e-6)    # merging changes the rounding only
    assert (out / "adapter").is_dir() == (ho.methods.get(method).uses_adapter and not merge)
    assert tok("a b")["input_ids"] == s.tokenizer("a b")["input_ids"]


def test_export_cli_and_save_model(tmp_path, capsys):
    task = write_csv_task(tmp_path / "data")
    assert finetune_main(["--task", str(task), "--method", "hybrid", "--out", str(tmp_path / "run"), "--save-model",
                          "--lr-x", "5e-3", "--lr-y", "5e-2", *TINY]) == 0
    model_dir = tmp_path / "run" / "model"
    meta = json.loads((model_dir / "hybridopt.json").read_text())
    assert meta["task"] == "news" and meta["method"] == "hybrid" and meta["adapter"] == "adapter"
    capsys.readouterr()
    assert export_main([str(tmp_path / "run"), "--out", str(tmp_path / "merged"), "--merge", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "adapter merged" in out and "dev loss on 6 examples: trained" in out
    assert not (tmp_path / "merged" / "adapter").exists()
    assert export_main([str(tmp_path / "run"), "--out", str(tmp_path / "merged"), "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert export_main([str(tmp_path / "nothing"), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    # the unmerged --save-model directory and a fresh export of the same run hold the same weights
    assert export_main([str(tmp_path / "run"), "--out", str(tmp_path / "again"), "--no-progress"]) == 0
    a, b = export._read_weights(model_dir), export._read_weights(tmp_path / "again")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_every_bad_record_gets_its_own_line(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "train.csv").write_text("text,label\nfine,pos\n,pos\nok,neutral\nalso fine,neg\n\"x\",neg,extra\n")
    (folder / "dev.csv").write_text("text,label\ngood,pos\n")
    (tmp_path / "t.json").write_text(json.dumps({"data": "d", "prompt": "{text} =", "verbalizer": {"pos": " +", "neg": " -"}}))
    with pytest.raises(TaskError) as e:
        load_task(tmp_path / "t.json").load_records("train")
    lines = str(e.value).splitlines()
    assert lines == [f"{folder / 'train.csv'}:6: 3 fields, the header has 2"]   # unparsable rows first
    (folder / "train.csv").write_text("text,label\nfine,pos\n,pos\nok,neutral\nalso fine,neg\n")
    with pytest.raises(TaskError) as e:
        load_task(tmp_path / "t.json").load_records("train")
    assert str(e.value).splitlines() == [
        f"{folder / 'train.csv'}:3: 'text' must be a non-empty string",
        f"{folder / 'train.csv'}:4: bad label 'neutral' (expected one of: pos, neg)"]
