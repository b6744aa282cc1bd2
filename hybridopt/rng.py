"""Counter-based seeds: every random draw of a run is a pure function of (base seed, counters).

A ZO direction is never stored.  Block b of direction r on ZO tensor j of step t is
regenerated from ``block_seed(step_seed(seed, t), r, j, b)`` with a *local* ``torch.Generator``;
the global RNG is never touched.  Because seeds are
derived from counters (step index, probe index, tensor index) rather than drawn from a
stateful stream, a resumed run, a replay of the ZO log and every rank of a data-parallel
run regenerate bit-identical directions from the step counter alone.
"""
from __future__ import annotations

_MASK64 = (1 << 64) - 1
_MASK63 = (1 << 63) - 1


def splitmix64(x: int) -> int:
    """One round of SplitMix64 (Steele, Lea & Flood 2014): a bijective 64-bit mixer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix(*parts: int) -> int:
    """Hash a tuple of non-negative integers to a 63-bit seed (usable by ``manual_seed``)."""
    h = 0x243F6A8885A308D3
    for p in parts:
        h = splitmix64(h ^ (int(p) & _MASK64))
    return h & _MASK63


def step_seed(base_seed: int, step: int, stream: int = 0) -> int:
    """Seed of the ZO directions of optimizer step ``step`` (stream separates uses)."""
    return mix(base_seed, stream, step)


def tensor_seed(seed: int, probe: int, index: int) -> int:
    """Seed of direction ``probe`` restricted to ZO tensor ``index`` (its block 0)."""
    return mix(seed, probe, index)


def block_seed(seed: int, probe: int, index: int, block: int) -> int:
    """Seed of block ``block`` of direction ``probe`` on ZO tensor ``index``:
    ``mix(seed, probe, index, block)``, except that block 0 keeps :func:`tensor_seed`
    (``mix(seed, probe, index)``), so a tensor of one block draws the same stream as a whole-tensor draw."""
    return BlockSeeds(seed, probe, index)(block)


def _prefix(*parts: int) -> int:
    """:func:`mix`'s state after ``parts``, before the final 63-bit mask."""
    h = 0x243F6A8885A308D3
    for p in parts:
        h = splitmix64(h ^ (int(p) & _MASK64))
    return h


class BlockSeeds:
    """:func:`block_seed` of one (seed, probe, tensor) for many blocks: the hash of the common
    prefix (three of a block seed's four SplitMix64 rounds) computed once, not per block."""

    __slots__ = ("_h",)

    def __init__(self, seed: int, probe: int, index: int) -> None:
        self._h = _prefix(seed, probe, index)

    def __call__(self, block: int) -> int:
        return self._h & _MASK63 if block == 0 else splitmix64(self._h ^ (int(block) & _MASK64)) & _MASK63

