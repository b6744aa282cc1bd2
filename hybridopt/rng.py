"""Counter-based seeds: every random draw of a run is a pure function of (base seed, counters).

A ZO direction is never stored.  Direction r on ZO tensor j of step t is regenerated from the
key ``direction_key(step_seed(seed, t), r, j)`` by the counter-based generator of
:mod:`hybridopt.counter` (element e a pure function of (key, e)); the global RNG is never
touched.  Because keys are
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


def direction_key(seed: int, probe: int, index: int) -> int:
    """Key of direction ``probe`` restricted to ZO tensor ``index`` of a step with seed ``seed``."""
    return mix(seed, probe, index)
