"""Group comparisons for the volume table: two-sided t-tests, Cohen's d, Bonferroni threshold."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    return arr[np.isfinite(arr)]


def cohen_d(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Cohen's d of ``a`` minus ``b`` with the pooled sd ``sqrt(((na-1)sa² + (nb-1)sb²) / (na+nb-2))``.

    NaN values are dropped; NaN when a group has fewer than 2 values or the pooled sd is 0.
    """
    a, b = _finite(a), _finite(b)
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return float("nan")
    pooled = np.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    if pooled == 0:
        return float("nan")
    return float((a.mean() - b.mean()) / pooled)


def compare_groups(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, equal_var: bool = False
) -> dict[str, float | int | str]:
    """Two-sided two-sample t-test of ``a`` against ``b`` plus Cohen's d (``a`` minus ``b``).

    ``equal_var=False`` (default) is Welch's test, which suits synthetic samples whose spread differs from the
    real one; ``equal_var=True`` is Student's pooled-variance test. NaN values are dropped. Returns a dict
    with t, p, cohen_d, test, n_a, mean_a, sd_a, n_b, mean_b, sd_b (sd with ddof=1); t, p and d are NaN when
    a group has fewer than 2 values.
    """
    a, b = _finite(a), _finite(b)
    nan = float("nan")
    if len(a) >= 2 and len(b) >= 2:
        result = stats.ttest_ind(a, b, equal_var=equal_var, alternative="two-sided")
        t, p = float(result.statistic), float(result.pvalue)
    else:
        t, p = nan, nan
    return {
        "t": t,
        "p": p,
        "cohen_d": cohen_d(a, b),
        "test": "student" if equal_var else "welch",
        "n_a": len(a),
        "mean_a": float(a.mean()) if len(a) else nan,
        "sd_a": float(a.std(ddof=1)) if len(a) > 1 else nan,
        "n_b": len(b),
        "mean_b": float(b.mean()) if len(b) else nan,
        "sd_b": float(b.std(ddof=1)) if len(b) > 1 else nan,
    }


def bonferroni_threshold(alpha: float, n_tests: int) -> float:
    """The Bonferroni-corrected per-test significance level ``alpha / n_tests``."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if int(n_tests) != n_tests or n_tests < 1:
        raise ValueError(f"n_tests must be a positive integer, got {n_tests}")
    return alpha / int(n_tests)
