"""Built-in task files, shipped data, task-file parsing, validation with file:line, hand-checked templates."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from hybridopt.benchmarks import tasks
from hybridopt.benchmarks.tasks import DATA_DIR, Example, TaskError, get_task, load_records, load_split, load_task

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"


# ---- registry ------------------------------------------------------------------------------

def test_builtin_tasks_are_shipped_task_files_and_unknown_task():
    assert tasks.BUILTIN == ("sst2", "winogrande", "wsc")
    for name in tasks.BUILTIN:
        t = get_task(name)
        assert t.name == name and t.path == DATA_DIR / f"{name}.task.json" and t.kind == "classification"
    assert load_task(DATA_DIR / "sst2.task.json") == get_task("sst2")        # by name or by path: one path
    with pytest.raises(TaskError, match=r"unknown task 'boolq': not a built-in task \(sst2, winogrande, wsc\)"):
        get_task("boolq")
    with pytest.raises(ValueError, match="valid splits"):
        load_split("sst2", "validation")


def test_task_from_a_dict_in_python(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"q": "2+2", "a": 4}\n')
    (tmp_path / "dev.jsonl").write_text('{"q": "1+1", "a": 2}\n')
    t = tasks.Task.from_dict({"name": "sums", "data": str(tmp_path), "fields": {"a": "integer"},
                              "prompt": "{q} =", "target": " {a}"})
    assert t.load_split("train") == [Example(candidates=(("2+2 =", " 4"),), gold=0)]


def test_templates():
    T = tasks.Template.parse
    assert T("{a|lower} {{x}} {b|before_blank}", "t").render({"a": "AB", "b": "p_q"}) == "ab {x} p"
    assert T("{b|after_blank|strip}", "t").render({"b": "p_  q "}) == "q"
    assert T("{a} and {b}", "t").fields == ("a", "b")
    for bad, why in (("{a|upper2}", "unknown filter 'upper2'"), ("{a", "unbalanced '{'"), ("}", "unbalanced '}'"),
                     ("{}", "empty placeholder")):
        with pytest.raises(TaskError, match=why):
            T(bad, "t")


# ---- hand-checked templates ---------------------------------------------------------------

def test_sst2_template():
    ex = get_task("sst2").example({"sentence": "a gorgeous , witty , seductive movie .", "label": 1})
    ctx = "a gorgeous , witty , seductive movie . It was"
    assert ex == Example(candidates=((ctx, " terrible"), (ctx, " great")), gold=1)


def test_wsc_template():
    rec = {"text": "Mark told Pete many lies about himself, which Pete included in his book. "
                   "He should have been more skeptical.",
           "span1_text": "Mark", "span1_index": 0, "span2_text": "He", "span2_index": 13, "label": 0}
    ex = get_task("wsc").example(rec)
    ctx = ("Mark told Pete many lies about himself, which Pete included in his book. He should have "
           "been more skeptical.\nIn the previous sentence, does the pronoun \"he\" refer to Mark? "
           "Yes or No?\n")
    assert ex.candidates == ((ctx, "No"), (ctx, "Yes"))
    assert ex.gold == 0


def test_winogrande_partial_scoring_template():
    rec = {"sentence": "Ian volunteered to eat Dennis's menudo after already having a bowl because _ "
                       "despised eating intestine.", "option1": "Ian", "option2": "Dennis", "label": 1}
    ex = get_task("winogrande").example(rec)
    head = "Ian volunteered to eat Dennis's menudo after already having a bowl because "
    assert ex.candidates == ((head + "Ian", " despised eating intestine."),
                             (head + "Dennis", " despised eating intestine."))
    assert ex.gold == 1
    # blank right before the final period: the continuation is " ."
    ex2 = get_task("winogrande").example(
        {"sentence": "He took the _ .", "option1": "cake", "option2": "pie", "label": 0})
    assert ex2.candidates == (("He took the cake", " ."), ("He took the pie", " ."))


def test_shipped_first_records_render():
    # first line of each shipped dev file, checked by hand against the template
    sst = load_records("sst2", "dev")[0]
    ex = load_split("sst2", "dev")[0]
    assert ex.candidates[0] == (sst["sentence"] + " It was", " terrible") and ex.gold == sst["label"]
    w = load_records("wsc", "train")[0]
    assert w["text"].startswith("Susan knows all about Ann 's personal problems")
    ex = load_split("wsc", "train")[0]
    assert ex.candidates[1] == (
        "Susan knows all about Ann 's personal problems because she is indiscreet.\nIn the previous "
        "sentence, does the pronoun \"she\" refer to Ann? Yes or No?\n", "Yes")
    assert ex.gold == 1


def test_example_validation():
    assert Example(candidates=(("a", " b"),), gold=0).gold == 0          # one candidate: an SFT target
    with pytest.raises(ValueError):
        Example(candidates=(), gold=0)
    with pytest.raises(ValueError):
        Example(candidates=(("a", " b"), ("a", " c")), gold=2)
    with pytest.raises(ValueError):
        Example(candidates=(("a", ""), ("a", " c")), gold=0)


# ---- shipped data --------------------------------------------------------------------------

EXPECTED = {"sst2": (1000, 500, 872), "winogrande": (1000, 500, 1000), "wsc": (453, 101, 104)}


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_shipped_sizes_labels_and_manifest(task):
    manifest = json.loads((DATA_DIR / "MANIFEST.json").read_text())
    assert manifest["seed"] == 0
    for split, n in zip(("train", "dev", "test"), EXPECTED[task]):
        recs = load_records(task, split)
        assert len(recs) == n
        entry = manifest["tasks"][task]["splits"][split]
        assert entry["rows"] == n
        path = DATA_DIR / task / f"{split}.jsonl"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert {r["label"] for r in recs} == {0, 1}
    ids = {s: {json.dumps(r["id"]) for r in load_records(task, s)} for s in ("train", "dev")}
    assert not ids["train"] & ids["dev"], "train and dev must be disjoint"


def test_shipped_total_size_small():
    total = sum(p.stat().st_size for p in DATA_DIR.rglob("*") if p.is_file())
    assert total < 2_000_000


def test_wsc_split_is_grouped_by_sentence():
    train = {r["text"] for r in load_records("wsc", "train")}
    dev = {r["text"] for r in load_records("wsc", "dev")}
    test = {r["text"] for r in load_records("wsc", "test")}
    assert not train & dev
    assert not (train | dev) & test


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data (the original files) not present")
def test_make_subsets_bit_identical(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_subsets", DATA_DIR / "make_subsets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--src", str(SHARED), "--out", str(tmp_path)]) == 0
    shipped = sorted(p.relative_to(DATA_DIR) for p in DATA_DIR.rglob("*.jsonl")) + [Path("MANIFEST.json")]
    for rel in shipped:
        assert (tmp_path / rel).read_bytes() == (DATA_DIR / rel).read_bytes(), rel


# ---- validation with file:line ----------------------------------------------------------------

GOOD_SST = '{"id":"a","sentence":"fine film","label":1}\n'


def _write(tmp_path, task, split, text):
    d = tmp_path / task
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{split}.jsonl"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize("bad, why", [
    ('{"sentence": "x", "label": 1\n', "malformed JSON"),
    ('{"label": 1}\n', "missing key(s) 'sentence'"),
    ('{"sentence": "x"}\n', "missing key(s) 'label'"),
    ('{"sentence": "x", "label": 2}\n', "bad label 2 (expected one of: 0, 1)"),
    ('{"sentence": "x", "label": "2"}\n', "bad label '2'"),
    ('{"sentence": "x", "label": true}\n', "bad label True"),
    ('{"sentence": "x", "label": 1.0}\n', "bad label 1.0"),
    ('{"sentence": 5, "label": 1}\n', "'sentence' must be a string"),
    ('{"sentence": "", "label": 0}\n', "non-empty"),
    ('[1, 2]\n', "expected a JSON object"),
])
def test_validation_reports_file_and_line(tmp_path, bad, why):
    p = _write(tmp_path, "sst2", "train", GOOD_SST + "\n" + bad + GOOD_SST)
    with pytest.raises(ValueError) as e:
        load_split("sst2", "train", data_dir=tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"{p}:3: "), msg
    assert why in msg


def test_validation_task_specific(tmp_path):
    p = _write(tmp_path, "winogrande", "dev",
               '{"sentence":"no blank here.","option1":"a","option2":"b","label":0}\n')
    with pytest.raises(ValueError, match=rf"{p}:1: .*exactly one '_'"):
        load_split("winogrande", "dev", data_dir=tmp_path)
    p = _write(tmp_path, "wsc", "dev",
               '{"text":"t","span1_text":"a","span1_index":-1,"span2_text":"b","span2_index":1,"label":0}\n')
    with pytest.raises(ValueError, match=rf"{p}:1: 'span1_index' must be a non-negative integer"):
        load_split("wsc", "dev", data_dir=tmp_path)
    p = _write(tmp_path, "winogrande", "train",
               '{"sentence":"ends with a blank _","option1":"a","option2":"b","label":0}\n')
    with pytest.raises(ValueError, match=rf"{p}:1: the continuation of label '0' is empty"):
        load_split("winogrande", "train", data_dir=tmp_path)


def test_user_data_dir_layouts(tmp_path):
    _write(tmp_path, "sst2", "test", GOOD_SST * 3)
    assert len(load_split("sst2", "test", data_dir=tmp_path)) == 3
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "dev.jsonl").write_text(GOOD_SST * 2)
    assert len(load_split("sst2", "dev", data_dir=flat)) == 2
    with pytest.raises(TaskError, match="no train split"):
        load_split("sst2", "train", data_dir=flat)
    (flat / "train.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="no records"):
        load_split("sst2", "train", data_dir=flat)
