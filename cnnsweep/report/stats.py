"""Statistics for studies: bootstrap intervals per configuration, and paired comparisons of one
factor's levels with the probability of improvement P(A > B).

Following Bouthillier et al., "Accounting for Variance in Machine Learning Benchmarks" (MLSys
2021): compare A and B over pairs of runs that differ only in the factor under test, report the
mean difference with a bootstrap 95% interval, and P(A > B) with its bootstrap interval; when
that interval contains 0.5 the two are not distinguishable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 4000
MIN_PAIRS = 5  # fewer pairs than this give no verdict: a bootstrap over 2-4 values means little
SEED = 20210401  # fixed, so a report is reproducible


def bootstrap_interval(values, statistic=np.mean) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of ``statistic``; NaNs when there are < 2 values."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return math.nan, math.nan
    if np.all(values == values[0]):
        point = float(statistic(values))
        return point, point  # every resample is the same
    result = stats.bootstrap(
        (values,), statistic, confidence_level=CONFIDENCE, n_resamples=RESAMPLES,
        method="percentile", vectorized=False, rng=np.random.default_rng(SEED),
    )  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def probability_of_improvement(differences) -> float:
    """P(A > B) from paired differences A - B; a tie counts one half."""
    d = np.asarray(differences, dtype=float)
    return float(np.mean((d > 0) + 0.5 * (d == 0)))


def configuration_summary(frame: pd.DataFrame, metric: str, keys: list[str]) -> pd.DataFrame:
    """Mean of ``metric`` per configuration (over seeds) with a bootstrap 95% interval and the
    seed-to-seed standard deviation."""
    rows = []
    for key, group in frame.dropna(subset=[metric]).groupby(keys, sort=False, dropna=False):
        values = group[metric].to_numpy(float)
        low, high = bootstrap_interval(values)
        key = key if isinstance(key, tuple) else (key,)
        sd = float(values.std(ddof=1)) if len(values) >= 2 else math.nan  # over seeds
        rows.append({**dict(zip(keys, key, strict=True)), "runs": len(values),
                     "mean": float(values.mean()), "sd": sd, "ci_low": low,
                     "ci_high": high})  # fmt: skip
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Comparison:
    """A vs B on one metric over matched pairs of runs."""

    factor: str
    a: str
    b: str
    metric: str
    pairs: int
    mean_a: float
    mean_b: float
    mean_difference: float  # mean of (A - B)
    difference_ci: tuple[float, float]
    p_a_greater: float  # P(A > B)
    p_ci: tuple[float, float]
    wilcoxon_p: float  # two-sided signed-rank test, for readers who want a p-value

    @property
    def outcome(self) -> str:
        """'greater' (A > B), 'less' (A < B), or 'indistinguishable' (or too few pairs)."""
        low, high = self.p_ci
        if self.pairs < MIN_PAIRS or math.isnan(low):
            return "indistinguishable"
        if low > 0.5:
            return "greater"
        if high < 0.5:
            return "less"
        return "indistinguishable"


def pairing_keys(frame: pd.DataFrame, factor: str, factors: list[str]) -> list[str]:
    """Columns that must match for two runs to differ only in ``factor`` (the replicate too:
    the seed, and the fold of a k-fold study).

    A factor whose values depend on ``factor`` (the learning rates of each optimizer) is matched
    by its rank within each level instead (the higher vs the higher learning rate).
    """
    keys = []
    levels = frame[factor].dropna().unique()
    for other in factors:
        if other == factor:
            continue
        value_sets = {frozenset(frame.loc[frame[factor] == level, other]) for level in levels}
        dependent = len(value_sets) > 1 and f"{other}_rank" in frame.columns
        keys.append(f"{other}_rank" if dependent else other)
    return [*keys, "seed", *(["fold"] if "fold" in frame.columns else [])]


def with_ranks(frame: pd.DataFrame, factors: list[str]) -> pd.DataFrame:
    """Add ``<factor>_rank`` for each numeric factor: its rank among the values used alongside
    each level of every other factor (1 = largest)."""
    frame = frame.copy()
    for factor in factors:
        if not pd.api.types.is_numeric_dtype(frame[factor]):
            continue
        ranks = pd.Series(np.nan, index=frame.index)
        for other in factors:
            if other == factor:
                continue
            dense = frame.groupby(other)[factor].rank(method="dense", ascending=False)
            if dense.nunique() < frame[factor].nunique():
                ranks = dense  # values differ per level of `other`: rank within it
                break
        frame[f"{factor}_rank"] = ranks.fillna(frame[factor].rank(method="dense", ascending=False))
    return frame


def compare(frame: pd.DataFrame, factor: str, a, b, metric: str, factors: list[str]) -> Comparison:
    """Pair runs with ``factor == a`` and ``factor == b`` that match on everything else."""
    keys = [k for k in pairing_keys(frame, factor, factors) if k in frame.columns]
    left = frame[frame[factor] == a].dropna(subset=[metric])
    right = frame[frame[factor] == b].dropna(subset=[metric])
    merged = left.merge(right, on=keys, suffixes=("_a", "_b"))
    values_a = merged[f"{metric}_a"].to_numpy(float)
    values_b = merged[f"{metric}_b"].to_numpy(float)
    differences = values_a - values_b
    nan = math.nan
    if len(differences) == 0:
        return Comparison(factor, str(a), str(b), metric, 0, nan, nan, nan, (nan, nan), nan,
                          (nan, nan), nan)  # fmt: skip
    wilcoxon_p = nan
    if len(differences) >= 2 and np.any(differences != 0):
        wilcoxon_p = float(stats.wilcoxon(differences).pvalue)
    return Comparison(
        factor=factor, a=str(a), b=str(b), metric=metric, pairs=len(differences),
        mean_a=float(values_a.mean()), mean_b=float(values_b.mean()),
        mean_difference=float(differences.mean()),
        difference_ci=bootstrap_interval(differences),
        p_a_greater=probability_of_improvement(differences),
        p_ci=bootstrap_interval(differences, probability_of_improvement),
        wilcoxon_p=wilcoxon_p,
    )  # fmt: skip


def factor_comparisons(
    frame: pd.DataFrame, factors: list[str], metric: str, parents: dict[str, str]
) -> list[tuple[str, Comparison]]:
    """Every pair of levels of every factor, as (context, Comparison), where any pair matched.

    A dependent factor (``parents``: the learning rates chosen ``by`` optimizer) is compared
    within each level of the factor it depends on.
    """
    frame = with_ranks(frame, factors)
    rows = []
    for factor in factors:
        parent = parents.get(factor)
        groups = [("", frame)] if parent is None else [
            (f"{parent}={level}", part) for level, part in frame.groupby(parent, sort=False)
        ]  # fmt: skip
        for context, part in groups:
            levels = list(dict.fromkeys(part[factor].dropna()))
            for i, a in enumerate(levels):
                for b in levels[i + 1 :]:
                    result = compare(part, factor, a, b, metric, factors)
                    if result.pairs:
                        rows.append((context, result))
    return rows
