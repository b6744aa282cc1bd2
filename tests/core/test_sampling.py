"""Random reshuffling: each epoch is a permutation; the state round-trips exactly."""
import pytest
import torch
from hypothesis import given, strategies as st

from hybridopt import RandomReshuffling


@given(n=st.integers(1, 40), b=st.integers(1, 40), seed=st.integers(0, 2**31), epochs=st.integers(1, 4),
       drop_last=st.booleans())
def test_each_epoch_is_a_permutation(n, b, seed, epochs, drop_last):
    b = min(b, n)
    s = RandomReshuffling(n, b, seed=seed, drop_last=drop_last)
    for e in range(epochs):
        seen = []
        for _ in range(s.steps_per_epoch):
            batch = s.next_batch()
            assert s.batch_epoch == e
            seen.append(batch)
        idx = torch.cat(seen)
        assert len(idx) == (n // b) * b if drop_last else n
        assert len(set(idx.tolist())) == len(idx)  # without replacement
        if not drop_last:
            assert sorted(idx.tolist()) == list(range(n))
        assert s.epoch == e + 1


def test_fresh_permutation_every_epoch():
    s = RandomReshuffling(50, 50, seed=0)
    perms = [s.next_batch().tolist() for _ in range(5)]
    assert len({tuple(p) for p in perms}) == 5


def test_replicates_have_independent_permutations():
    s = RandomReshuffling(30, 30, seed=0, replicates=4)
    batch = s.next_batch()
    assert batch.shape == (4, 30)
    for row in batch:
        assert sorted(row.tolist()) == list(range(30))
    assert len({tuple(r.tolist()) for r in batch}) == 4


@given(n=st.integers(2, 30), b=st.integers(1, 30), k=st.integers(0, 50), seed=st.integers(0, 1000))
def test_state_roundtrip_continues_identically(n, b, k, seed):
    b = min(b, n)
    a = RandomReshuffling(n, b, seed=seed)
    for _ in range(k):
        a.next_batch()
    state = a.state_dict()
    c = RandomReshuffling(n, b, seed=12345)
    c.load_state_dict(state)
    for _ in range(2 * a.steps_per_epoch + 1):
        assert torch.equal(a.next_batch(), c.next_batch())
        assert a.batch_epoch == c.batch_epoch


def test_bad_arguments():
    with pytest.raises(ValueError, match="n must be"):
        RandomReshuffling(0, 1)
    with pytest.raises(ValueError, match="batch_size"):
        RandomReshuffling(5, 6)
    with pytest.raises(ValueError, match="sampler state has n"):
        RandomReshuffling(5, 1).load_state_dict(RandomReshuffling(6, 1).state_dict())
