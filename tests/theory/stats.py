"""Pass rules of spec §5 (deterministic, Monte Carlo "<=", "=", sharpness) as small reusable helpers.

Every helper returns a :class:`Check`; tests ``assert check.passed, check`` and mutation tests assert
``check.violated``. Import as ``from stats import ...`` (``tests/theory`` is on ``sys.path`` under pytest's default
rootdir-relative import mode) or load the file by path.

Rules (spec §5 "Conventions"):
- deterministic: pass iff ``lhs <= rhs (1 + 1e-9) + 1e-12`` (elementwise; extra ``atol`` for finite differences);
- MC "<=": N samples in B = 50 batches, mean m and s_B = sd(batch means)/sqrt(B); fail iff ``m - 5 s_B > rhs (1+1e-9)``;
- MC "=": fail iff ``|m - target| > z_K s_B`` with z_K the Bonferroni-corrected 5-sigma threshold over K projections;
- sharpness: pass iff ``m + 5 s_B >= r* rhs (1 - 1e-3)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

B_DEFAULT = 50
Z = 5.0
REL = 1e-9
ABS = 1e-12


@dataclass(frozen=True)
class Check:
    """Outcome of one check: ``passed``, the compared numbers and a one-line ``detail``."""

    passed: bool
    lhs: float
    rhs: float
    detail: str = ""

    @property
    def violated(self) -> bool:
        return not self.passed

    def __bool__(self):  # so that ``assert check`` works and prints the repr on failure
        return bool(self.passed)


def det_le(lhs, rhs, rel: float = REL, atol: float = ABS, what: str = "") -> Check:
    """Deterministic ``lhs <= rhs (1 + rel) + atol`` elementwise; reports the worst entry."""
    lhs, rhs = np.broadcast_arrays(np.asarray(lhs, dtype=np.float64), np.asarray(rhs, dtype=np.float64))
    slack = rhs * (1 + rel) + atol - lhs
    if slack.size == 0:
        return Check(True, float("nan"), float("nan"), "empty")
    i = np.unravel_index(np.argmin(np.where(np.isnan(slack), -np.inf, slack)), slack.shape)
    ok = bool(np.all(slack >= 0))
    return Check(ok, float(lhs[i]), float(rhs[i]), f"{what} deterministic <= worst at {i}: slack={slack[i]:.3e}")


def det_ge(lhs, rhs_times_ratio, rel: float = REL, atol: float = ABS, what: str = "") -> Check:
    """Deterministic sharpness: ``lhs >= target (1 - rel) - atol`` elementwise (target = r* x RHS)."""
    lhs, t = np.broadcast_arrays(np.asarray(lhs, dtype=np.float64), np.asarray(rhs_times_ratio, dtype=np.float64))
    slack = lhs - (t * (1 - rel) - atol)
    i = np.unravel_index(np.argmin(slack), slack.shape)
    return Check(bool(np.all(slack >= 0)), float(lhs[i]), float(t[i]), f"{what} deterministic >= (sharpness)")


def batch_mean_se(samples, B: int = B_DEFAULT):
    """Mean and batch standard error ``s_B = sd(batch means)/sqrt(B)`` along axis 0 (N divisible by B is not
    required: the remainder is dropped for the batches, not for the mean)."""
    x = np.asarray(samples, dtype=np.float64)
    N = x.shape[0]
    if N < B:
        raise ValueError(f"need at least B={B} samples, got {N}")
    per = N // B
    bm = x[: per * B].reshape((B, per) + x.shape[1:]).mean(axis=1)
    return x.mean(axis=0), bm.std(axis=0, ddof=1) / math.sqrt(B)


def mc_le(samples, rhs, B: int = B_DEFAULT, z: float = Z, rel: float = REL, what: str = "") -> Check:
    """MC "<=": fail iff ``mean - z s_B > rhs (1 + rel)``."""
    m, se = batch_mean_se(samples, B)
    m, se, rhs = float(m), float(se), float(rhs)
    ok = not (m - z * se > rhs * (1 + rel))
    return Check(ok, m, rhs, f"{what} MC <=: mean={m:.6g} s_B={se:.3g} rhs={rhs:.6g} ratio={m / rhs if rhs else np.inf:.4g}")


def bonferroni_z(K: int, z: float = Z) -> float:
    """Two-sided threshold keeping the family-wise level of one ``z``-sigma test over K projections."""
    alpha = math.erfc(z / math.sqrt(2)) / K  # two-sided per-projection level
    lo, hi = z, z + 10.0
    for _ in range(200):  # bisection on erfc(t/sqrt2) = alpha
        mid = 0.5 * (lo + hi)
        if math.erfc(mid / math.sqrt(2)) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def mc_eq(samples, target, B: int = B_DEFAULT, z: float = Z, what: str = "") -> Check:
    """MC "=": samples ``(N, K)`` (K projections, or ``(N,)``), target ``(K,)``; fail iff any
    ``|mean_j - target_j| > z_K s_B,j`` with the Bonferroni threshold z_K."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    t = np.broadcast_to(np.asarray(target, dtype=np.float64), x.shape[1:])
    m, se = batch_mean_se(x, B)
    zk = bonferroni_z(x.shape[1], z)
    dev = np.abs(m - t) / np.where(se > 0, se, np.inf)
    dev = np.where((se == 0) & (m != t), np.inf, dev)
    j = int(np.argmax(dev))
    return Check(bool(np.all(dev <= zk)), float(m[j]), float(t[j]),
                 f"{what} MC =: worst projection {j}: |dev|/s_B={dev[j]:.3g} > z_K={zk:.3g}?")


def sharp(samples, rhs, ratio: float, B: int = B_DEFAULT, z: float = Z, tol: float = 1e-3, what: str = "") -> Check:
    """MC sharpness: pass iff ``mean + z s_B >= ratio * rhs * (1 - tol)``."""
    m, se = batch_mean_se(samples, B)
    m, se = float(m), float(se)
    target = ratio * float(rhs) * (1 - tol)
    return Check(bool(m + z * se >= target), m, float(rhs),
                 f"{what} sharpness: mean+5s_B={m + z * se:.6g} vs r*·rhs={target:.6g} (r*={ratio:.4g})")


def mc_le_adaptive(sample_fn, rhs, N: int, B: int = B_DEFAULT, max_doublings: int = 2, what: str = "") -> Check:
    """MC "<=" with the spec's rule "if s_B/mean > 0.02, double N before deciding" (``sample_fn(N) -> (N,)``)."""
    x = sample_fn(N)
    for _ in range(max_doublings):
        m, se = batch_mean_se(x, B)
        if m == 0 or se / abs(m) <= 0.02:
            break
        x = np.concatenate([x, sample_fn(x.shape[0])])
    return mc_le(x, rhs, B, what=what)
