"""The few statistics the A/B report needs, in plain Python (no SciPy on a Lambda or a laptop install).

Percentiles use linear interpolation between closest ranks (Hyndman & Fan type 7, NumPy's default). Confidence
intervals and tests use Student's t distribution, whose CDF is computed from the regularized incomplete beta
function (Lentz's continued fraction, as in Numerical Recipes §6.4) — accurate to ~1e-10, far below what a
report prints. The test suite checks every number against SciPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def sample_variance(values: Sequence[float]) -> float:
    m = mean(values)
    return math.fsum((v - m) ** 2 for v in values) / (len(values) - 1)


def _betacf(a: float, b: float, x: float) -> float:
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1) < eps:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1 - math.exp(log_front) * _betacf(b, a, 1 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * regularized_beta(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t > 0 else tail


def t_ppf(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on the CDF)."""
    low, high = -1e3, 1e3
    for _ in range(200):
        middle = (low + high) / 2
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
    return (low + high) / 2


@dataclass(frozen=True, slots=True)
class MeanInterval:
    n: int
    mean: float
    low: float | None
    high: float | None


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> MeanInterval | None:
    """The mean and its t-based confidence interval (no interval below two values)."""
    if not values:
        return None
    m = mean(values)
    if len(values) < 2:
        return MeanInterval(len(values), m, None, None)
    half = t_ppf(1 - (1 - confidence) / 2, len(values) - 1) * math.sqrt(sample_variance(values) / len(values))
    return MeanInterval(len(values), m, m - half, m + half)


@dataclass(frozen=True, slots=True)
class WelchResult:
    t: float
    df: float
    p_value: float


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> WelchResult | None:
    """Welch's two-sided two-sample t-test (unequal variances); ``None`` below two values per side."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = sample_variance(a) / len(a), sample_variance(b) / len(b)
    diff = mean(a) - mean(b)
    if va + vb == 0:  # both samples constant: the difference is either certain or nil
        return WelchResult(math.copysign(math.inf, diff) if diff else 0.0, len(a) + len(b) - 2.0,
                           0.0 if diff else 1.0)
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return WelchResult(t, df, 2 * (1 - t_cdf(abs(t), df)))
