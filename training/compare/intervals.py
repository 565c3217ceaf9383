"""Intervals over seeds: the Student-t quantile (no scipy) and the t-interval of a mean.

`mtrank compare` trains each variant R times; the spread of a metric over those R seeds is the
training noise, and `mean_interval` gives its mean with a t-interval (R - 1 degrees of freedom).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def t_quantile(probability: float, df: int) -> float:
    """The Student-t quantile (inverse CDF) with `df` degrees of freedom, by bisection."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {probability}")
    if probability < 0.5:
        return -t_quantile(1.0 - probability, df)
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < probability:
        high *= 2.0
    for _ in range(100):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if _t_cdf(mid, df) < probability else (low, mid)
    return 0.5 * (low + high)


def _t_cdf(t: float, df: int) -> float:
    """P(T <= t) for t >= 0: 1 - I_x(df/2, 1/2) / 2 with x = df / (df + t^2)."""
    return 1.0 - 0.5 * _betainc(0.5 * df, 0.5, df / (df + t * t))


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta I_x(a, b) (continued fraction, Numerical Recipes 6.4)."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    return math.exp(log_front) * result / a


def mean_interval(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean, standard deviation and the t-interval of the mean over seeds (None with one value)."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    n = len(finite)
    if n == 0:
        return {"mean": None, "std": None, "low": None, "high": None, "runs": list(values)}
    mean = float(finite.mean())
    if n == 1:
        return {"mean": mean, "std": None, "low": None, "high": None, "runs": list(values)}
    std = float(finite.std(ddof=1))
    half = t_quantile(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "low": mean - half, "high": mean + half, "runs": list(values)}
