"""Candidate encoding and scoring on the tiny random llama (no download)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hybridopt.benchmarks.scoring import (EncodedSplit, accuracy, candidate_scores, classification_loss,
                                encode_pair, encode_split, evaluate, make_loss_fn)
from hybridopt.benchmarks.tasks import Example


def reference_score(model, ctx: list[int], cont: list[int]) -> float:
    """Mean log-prob of ``cont`` given ``ctx``: one unpadded forward, no batching tricks."""
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    return sum(lp[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont)) / len(cont)


def test_encode_pair_marks_continuation(tiny_tok):
    ctx, cont = encode_pair(tiny_tok, "a fine film It was", " great")
    assert ctx[0] == tiny_tok.bos_token_id                      # BOS kept on the context
    assert cont == tiny_tok(" great", add_special_tokens=False)["input_ids"] and len(cont) == 1
    ctx2, cont2 = encode_pair(tiny_tok, "He took the cake", " to the party.")
    assert tiny_tok.decode(cont2) == " to the party."
    assert tiny_tok.decode(ctx2, skip_special_tokens=True) == "He took the cake"
    assert tiny_tok.bos_token_id not in cont2


def test_single_token_detection(tiny_tok, sst2_dev, wsc_dev, wino_dev):
    assert encode_split(tiny_tok, sst2_dev[:5]).single_token
    assert encode_split(tiny_tok, wsc_dev[:5]).single_token
    assert not encode_split(tiny_tok, wino_dev[:5]).single_token


def test_general_path_matches_reference(tiny_model, tiny_tok, wino_dev):
    enc = encode_split(tiny_tok, wino_dev[:4])
    scores = candidate_scores(tiny_model, enc, batch_size=8).detach()
    for i in range(4):
        for k in range(2):
            ref = reference_score(tiny_model, enc.contexts[i][k], enc.continuations[i][k])
            assert scores[i, k].item() == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize("fixture", ["sst2_dev", "wsc_dev"])
def test_fast_path_equals_general_path(tiny_model, tiny_tok, fixture, request):
    enc = encode_split(tiny_tok, request.getfixturevalue(fixture)[:12])
    fast = candidate_scores(tiny_model, enc, batch_size=5).detach()
    slow = candidate_scores(tiny_model, enc, batch_size=5, fast_path=False).detach()
    assert fast.shape == (12, 2)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    ctx, cont = enc.contexts[3][1], enc.continuations[3][1]
    assert fast[3, 1].item() == pytest.approx(reference_score(tiny_model, ctx, cont), abs=1e-5)


@pytest.mark.parametrize("fixture", ["sst2_dev", "wino_dev"])
def test_batched_equals_unbatched_and_padding_sides(tiny_model, tiny_tok, fixture, request):
    exs = request.getfixturevalue(fixture)[:10]
    one = candidate_scores(tiny_model, encode_split(tiny_tok, exs), batch_size=1).detach()
    for side in ("right", "left"):
        enc = encode_split(tiny_tok, exs, padding_side=side)
        many = candidate_scores(tiny_model, enc, batch_size=7).detach()
        torch.testing.assert_close(many, one, atol=1e-5, rtol=0)
    capped = candidate_scores(tiny_model, encode_split(tiny_tok, exs), batch_size=64,
                              max_tokens=40).detach()
    torch.testing.assert_close(capped, one, atol=1e-5, rtol=0)


def test_tokenizer_and_examples_entry_point(tiny_model, tiny_tok, wino_dev):
    a = candidate_scores(tiny_model, tiny_tok, wino_dev[:3], batch_size=4)
    b = candidate_scores(tiny_model, encode_split(tiny_tok, wino_dev[:3]), batch_size=4)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError):
        candidate_scores(tiny_model, tiny_tok)


def test_max_length_truncates_context(tiny_tok):
    ex = Example(candidates=(("one two three four five six seven", " great"),
                             ("one two three four five six seven", " terrible")), gold=0)
    full = encode_split(tiny_tok, [ex])
    short = encode_split(tiny_tok, [ex], max_length=5)
    assert len(short.contexts[0][0]) + len(short.continuations[0][0]) == 5
    assert short.contexts[0][0] == full.contexts[0][0][-4:]
    assert short.continuations == full.continuations


def test_classification_loss_is_cross_entropy_over_candidates():
    scores = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -0.1, -2.0]])
    gold = torch.tensor([2, 0])
    manual = -(torch.log_softmax(scores, -1)[torch.arange(2), gold]).mean()
    assert classification_loss(scores, gold).item() == pytest.approx(manual.item())
    assert classification_loss(scores, gold).item() == pytest.approx(F.cross_entropy(scores, gold).item())
    assert accuracy(scores, gold) == 0.5
    assert accuracy(scores, torch.tensor([2, 1])) == 1.0


def test_make_loss_fn_and_evaluate(tiny_model, tiny_tok, sst2_dev):
    from hybridopt.llm import attach_peft, parameter_blocks
    enc = encode_split(tiny_tok, sst2_dev[:16])
    pm = attach_peft(tiny_model, "lora")
    _, adapter = parameter_blocks(pm)
    loss_fn = make_loss_fn(enc)
    idx = torch.tensor([3, 0, 7, 7])
    loss = loss_fn(pm, idx)
    sub = enc.subset(idx)
    expect = classification_loss(candidate_scores(pm, sub, batch_size=2), sub.gold)
    assert loss.dim() == 0 and loss.item() == pytest.approx(expect.item(), abs=1e-6)
    loss.backward()
    assert all(p.grad is not None for p in adapter)
    assert any(p.grad.abs().sum() > 0 for p in adapter)
    with pytest.raises(ValueError, match="1-D"):
        loss_fn(pm, torch.zeros((2, 2), dtype=torch.long))
    pm.train()
    acc = evaluate(pm, enc, batch_size=4)
    assert 0.0 <= acc <= 1.0 and pm.training                    # mode restored
    acc2, scores = evaluate(pm, enc, batch_size=16, return_scores=True)
    assert acc2 == acc and scores.shape == (16, 2) and not scores.requires_grad


def test_prefix_tuning_scoring_consistent(tiny_model, tiny_tok, sst2_dev, wino_dev):
    """Prefix tuning shifts positions by the prefix: padding sides and paths must still agree."""
    from hybridopt.llm import attach_peft
    pm = attach_peft(tiny_model, "prefix", num_virtual_tokens=5)
    enc = encode_split(tiny_tok, sst2_dev[:6])
    fast = candidate_scores(pm, enc, batch_size=4).detach()
    slow = candidate_scores(pm, enc, batch_size=1, fast_path=False).detach()
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    exs = wino_dev[:4]
    r = candidate_scores(pm, encode_split(tiny_tok, exs, padding_side="right"), batch_size=8).detach()
    l = candidate_scores(pm, encode_split(tiny_tok, exs, padding_side="left"), batch_size=8).detach()
    u = candidate_scores(pm, encode_split(tiny_tok, exs), batch_size=1).detach()
    torch.testing.assert_close(r, u, atol=1e-5, rtol=0)
    torch.testing.assert_close(l, u, atol=1e-5, rtol=0)


def test_encoded_split_checks():
    with pytest.raises(ValueError, match="padding_side"):
        EncodedSplit([[[1], [1]]], [[[2], [3]]], torch.tensor([0]), 0, "middle")
    with pytest.raises(ValueError, match="numbers of candidates"):
        EncodedSplit([[[1], [1]], [[1]]], [[[2], [3]], [[2]]], torch.tensor([0, 0]), 0)
