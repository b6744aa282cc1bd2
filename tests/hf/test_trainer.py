"""HybridTrainer on the tiny random llama: every method, equality with the bare core, resume,
best-model loading, save_model round trip, task files, metrics files, argument checks."""
from __future__ import annotations

import csv
import json

import pytest
import torch

import hybridopt as ho
from hybridopt.hf import HybridTrainer, HybridTrainingArguments, ReshuffleSampler

from .conftest import hf_args, tiny


def _snapshot(model):
    return [p.detach().clone() for p in model.parameters()]


def _train(tmp_path, method, data, collator, tok, steps=4, model=None, **kw):
    model = model if model is not None else tiny(method)
    tr = HybridTrainer(model=model, args=hf_args(tmp_path, method, max_steps=steps, **kw), train_dataset=data,
                       data_collator=collator, processing_class=tok)
    tr.train()
    return tr


def _losses(tr):
    return [h["loss"] for h in tr.state.log_history if "loss" in h]


@pytest.mark.parametrize("method", ho.METHODS)
def test_every_method_trains_and_moves_its_blocks(method, tmp_path, sft_data, collator, tok):
    from hybridopt.llm import parameter_blocks

    model = tiny(method)
    base, adapter = parameter_blocks(model)
    before = [p.detach().clone() for p in base], [p.detach().clone() for p in adapter]
    tr = _train(tmp_path, method, sft_data, collator, tok, steps=3, model=model)
    assert len(_losses(tr)) == 3 and all(torch.isfinite(torch.tensor(_losses(tr))))
    m = ho.methods.get(method)
    moved_base = any(not torch.equal(a, b) for a, b in zip(before[0], base))
    moved_adapter = any(not torch.equal(a, b) for a, b in zip(before[1], adapter))
    assert moved_base == m.uses_base
    assert moved_adapter == (m.uses_adapter and bool(adapter))
    assert tr.hybrid.step_count == 3
    passes = {"fo-full": 0, "fo-peft": 0}.get(method, 1.0)         # the core's weight passes per step (folded)
    assert tr._last.zo_passes == passes


def _reference_losses(method, data, collator, steps, batch, accum=1):
    """The same run on the bare core: ModuleProblem + HybridOptimizer + RandomReshuffling."""
    import torch.nn.functional as F

    model = tiny(method)
    args = hf_args("/nonexistent", method, max_steps=steps, gradient_accumulation_steps=accum)
    from hybridopt.llm import parameter_blocks
    zo, fo = ho.split_blocks(method, *parameter_blocks(model))

    def loss_fn(m, idx):   # HF's causal-LM loss, from logits (labels never passed to the model)
        b = collator([data[i] for i in idx.tolist()])
        logits = m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
        labels = F.pad(b["labels"], (0, 1), value=-100)[:, 1:]
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)

    opt = ho.HybridOptimizer(ho.ModuleProblem(model, loss_fn, zo, fo, n=len(data)), args.hybrid_config(steps))
    trace = ho.train(opt, ho.RandomReshuffling(len(data), batch, seed=0), steps)
    return trace.losses, model


@pytest.mark.parametrize("method", ["hybrid", "zo-full", "fo-peft"])
def test_trainer_steps_equal_core_steps(method, tmp_path, sft_data, collator, tok):
    tr = _train(tmp_path, method, sft_data, collator, tok, steps=6)     # 6 steps of 4: crosses an epoch
    ref, ref_model = _reference_losses(method, sft_data, collator, 6, 4)
    assert _losses(tr) == ref                                             # bit for bit
    for a, b in zip(tr.model.parameters(), ref_model.parameters()):
        assert torch.equal(a, b)


def test_gradient_accumulation_equals_core_micro_batches(tmp_path, sft_data, collator, tok):
    tr = _train(tmp_path, "hybrid", sft_data, collator, tok, steps=3, per_device_train_batch_size=2,
                gradient_accumulation_steps=2)
    ref, _ = _reference_losses("hybrid", sft_data, collator, 3, 4, accum=2)
    # the core averages its two micro-batches' losses; each micro-batch is collated on its own
    assert _losses(tr) == pytest.approx(ref, rel=1e-6)


def test_sampler_is_the_cores_random_reshuffling():
    s = ReshuffleSampler(10, seed=3)
    rr = ho.RandomReshuffling(10, batch_size=5, seed=3)
    for epoch in range(3):
        s.set_epoch(epoch)
        assert list(s) == rr.next_batch().tolist() + rr.next_batch().tolist()


def test_zo_probes_never_pass_labels_to_the_model(tmp_path, sft_data, collator, tok):
    model = tiny("hybrid")
    seen = []
    model.get_base_model().register_forward_pre_hook(
        lambda m, a, kw: seen.append((torch.is_grad_enabled(), kw.get("labels") is not None)), with_kwargs=True)
    _train(tmp_path, "hybrid", sft_data, collator, tok, steps=2, model=model)
    assert seen and not any(has_labels for _, has_labels in seen)
    assert sum(not grad for grad, _ in seen) == 4                   # 2 probes per step


def test_loss_is_the_models_own(sft_data, collator):
    model = tiny("hybrid")
    tr = HybridTrainer.__new__(HybridTrainer)
    tr.compute_loss_func, tr.hybrid = None, None
    batch = collator(sft_data[:6])
    s, w = tr.batch_loss(model, batch)
    assert torch.equal(s / w, model(**batch).loss)


def test_resume_from_checkpoint_is_bit_identical(tmp_path, sft_data, collator, tok):
    plain = _train(tmp_path / "plain", "hybrid", sft_data, collator, tok, steps=6)
    saved = _train(tmp_path / "a", "hybrid", sft_data, collator, tok, steps=6, save_strategy="steps", save_steps=3)
    assert _losses(saved) == _losses(plain)                         # checkpointing does not perturb the run
    resumed = HybridTrainer(model=tiny("hybrid"), args=hf_args(tmp_path / "b", max_steps=6, save_strategy="steps",
                                                                save_steps=3),
                            train_dataset=sft_data, data_collator=collator, processing_class=tok)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-3"))
    assert _losses(resumed) == _losses(plain)          # steps 1-3 from the checkpoint's state, 4-6 run again
    for a, b in zip(resumed.model.parameters(), plain.model.parameters()):
        assert torch.equal(a, b)
    assert resumed.hybrid.step_count == 6 and len(resumed.hybrid.zo_log) == 6


def test_load_best_model_at_end(tmp_path, sft_data, collator, tok):
    from hybridopt.benchmarks.export import load_into

    tr = HybridTrainer(model=tiny("hybrid"), args=hf_args(
        tmp_path, max_steps=6, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
        load_best_model_at_end=True, metric_for_best_model="eval_loss", learning_rate=0.2, lr_x=0.05),
        train_dataset=sft_data, eval_dataset=sft_data[:8], data_collator=collator, processing_class=tok)
    tr.train()
    evals = {h["step"]: h["eval_loss"] for h in tr.state.log_history if "eval_loss" in h}
    best = min(evals, key=evals.get)
    assert tr.state.best_model_checkpoint.endswith(f"checkpoint-{best}")
    ref = tiny("hybrid")
    load_into(ref, tmp_path / f"checkpoint-{best}")
    for a, b in zip(tr.model.parameters(), ref.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("merge", [False, True])
def test_save_model_reloads_with_transformers(merge, tmp_path, sft_data, collator, tok):
    from hybridopt.benchmarks.export import load_exported

    tr = _train(tmp_path / "run", "hybrid", sft_data, collator, tok, steps=3)
    batch = collator(sft_data[:8])
    with torch.no_grad():
        want = tr.model(**batch).loss
    if merge:
        tr.export(str(tmp_path / "final"), merge=True)
    else:
        tr.save_model(str(tmp_path / "final"))
    assert (tmp_path / "final" / "adapter").is_dir() != merge
    model, _ = load_exported(tmp_path / "final")
    with torch.no_grad():
        got = model(**batch).loss
    if merge:
        assert got.item() == pytest.approx(want.item(), rel=1e-5)
    else:
        assert torch.equal(got, want)


def test_task_file_classification_and_metrics_files(tmp_path, tok):
    from tests.bench.test_task_files import write_csv_task

    task = write_csv_task(tmp_path / "data")
    tr = HybridTrainer(model=tiny("hybrid"), args=hf_args(tmp_path / "run", max_steps=2, eval_strategy="steps",
                                                          eval_steps=2), task=task, processing_class=tok)
    tr.train()
    ev = tr.evaluate(tr.task_dataset("test"), metric_key_prefix="test")
    assert 0.0 <= ev["test_accuracy"] <= 1.0 and "test_loss" in ev
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert any("eval_accuracy" in r for r in rows) and any("test_accuracy" in r for r in rows)
    table = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert len(table) == len(rows) and "lr_x" in table[0]


def test_task_prompts_longer_than_task_max_length_fail_unless_truncation_is_asked(tmp_path, tok, caplog):
    """The CLI's prompt-length rule (no silent cut): too short a ``task_max_length`` names how many
    prompts and the length that fits; ``truncate_prompts=True`` cuts them from the left, with one warning."""
    from hybridopt.benchmarks.scoring import encode_split
    from tests.bench.test_task_files import write_csv_task

    task = write_csv_task(tmp_path / "data")
    args = hf_args(tmp_path / "run", max_steps=1)
    with pytest.raises(ValueError, match=r"train prompts do not fit max_length=20 .*raise task_max_length to "
                                         r"\d+ or pass truncate_prompts=True"):
        HybridTrainer(model=tiny("hybrid"), args=args, task=task, processing_class=tok, task_max_length=20)
    with caplog.at_level("WARNING"):
        tr = HybridTrainer(model=tiny("hybrid"), args=args, task=task, processing_class=tok, task_max_length=20,
                           truncate_prompts=True)
    assert "cut from the left" in caplog.text
    train = tr.task_dataset("train").encoded
    assert max(len(c) + len(k) for cs, ks in zip(train.contexts, train.continuations) for c, k in zip(cs, ks)) <= 20
    from hybridopt.benchmarks.tasks import load_splits, load_task
    want = encode_split(tok, load_splits(load_task(task))["train"], max_length=20)
    assert train.contexts == want.contexts           # the cut equals tokenising with the limit
    whole = HybridTrainer(model=tiny("hybrid"), args=args, task=task, processing_class=tok)
    assert whole.task_dataset("train").encoded.contexts == encode_split(tok, load_splits(load_task(task))["train"]).contexts


def test_task_file_sft(tmp_path, tok):
    from tests.bench.test_task_files import write_sft_task

    tr = HybridTrainer(model=tiny("fo-peft"), args=hf_args(tmp_path / "run", "fo-peft", max_steps=2),
                       task=write_sft_task(tmp_path / "data"), processing_class=tok)
    before = tr.evaluate()["eval_loss"]
    tr.train()
    assert tr.evaluate()["eval_loss"] < before


def test_tensorboard_when_installed(tmp_path, sft_data, collator, tok):
    pytest.importorskip("tensorboard")
    _train(tmp_path, "hybrid", sft_data, collator, tok, steps=2, report_to="tensorboard")
    assert list(tmp_path.rglob("events.out.tfevents.*"))            # output_dir/runs/<date>/


@pytest.mark.parametrize("bad, match", [
    ({"method": "mezo"}, "unknown method 'mezo'"),
    ({"max_grad_norm": 1.0}, "gradient clipping is not part of the hybrid step"),
    ({"lr_scheduler_type": "polynomial"}, "not a schedule of the hybrid optimizer"),
    ({"optim": "adafactor"}, "fo_optimizer"),
    ({"mu": 0.0}, "mu must be a finite number > 0"),
])
def test_bad_arguments(bad, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        hf_args(tmp_path, **bad)


def test_zo_needs_a_loss_it_can_compute(tmp_path, tok):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    cfg = LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, num_labels=2, pad_token_id=0)
    model = LlamaForSequenceClassification(cfg)
    data = [{"input_ids": [1, 5, 6], "attention_mask": [1, 1, 1], "labels": i % 2} for i in range(8)]
    tr = HybridTrainer(model=model, args=hf_args(tmp_path, "zo-full", max_steps=1), train_dataset=data)
    with pytest.raises(ValueError, match="cannot compute the ZO probes' loss"):
        tr.train()
    fo = HybridTrainer(model=LlamaForSequenceClassification(cfg), args=hf_args(tmp_path, "fo-full", max_steps=2),
                       train_dataset=data)
    fo.train()                                                     # FO only: the model's own loss
    assert len(_losses(fo)) == 2
