"""Statistics for studies: intervals per configuration, and paired comparisons of one factor's
levels with the probability of improvement P(A > B), valid at the small n of seed studies.

Following Bouthillier et al., "Accounting for Variance in Machine Learning Benchmarks" (MLSys
2021): compare A and B over pairs of runs that differ only in the factor under test (one pair
per configuration and seed, or fold), and report the mean difference and P(A > B). At the sizes
these studies have (3-48 pairs) a percentile bootstrap claims too much (over 5 of 5 wins its
interval for P(A > B) is [1, 1]), so:
- a mean (of a configuration over seeds, or of paired differences) gets a Student t interval,
  and none below 2 values ("n too small");
- P(A > B) gets a Wilson score interval on the wins (a tie counts one half);
- a verdict needs that interval clear of 0.5 *and* a two-sided sign test (exact binomial on wins
  against losses) below 0.05; no verdict is possible below MIN_PAIRS pairs (5 of 5 wins give
  p = 0.0625). Over a table of comparisons the sign tests are Holm-adjusted.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE


def sign_test(differences) -> float:
    """Two-sided exact sign test of paired differences (ties dropped); NaN with no untied pair."""
    d = np.asarray(differences, dtype=float)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    if wins + losses == 0:
        return math.nan
    return float(stats.binomtest(wins, wins + losses, 0.5).pvalue)


def _fewest_pairs() -> int:
    """The fewest pairs whose sign test can reach ALPHA at all (every pair a win): 6 at 0.05."""
    return next(n for n in range(1, 64) if sign_test(np.ones(n)) < ALPHA)


MIN_PAIRS = _fewest_pairs()


UNBOUNDED = (-math.inf, math.inf)


def mean_interval(values, bounds: tuple[float, float] = UNBOUNDED) -> tuple[float, float]:
    """Student t 95% interval of the mean, cut to ``bounds`` (the values the quantity can take:
    over 2-3 seeds a t interval of an accuracy can reach past 100%); NaNs with fewer than 2
    finite values."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return math.nan, math.nan
    mean, sem = float(values.mean()), float(stats.sem(values))
    if sem == 0:
        return mean, mean
    low, high = stats.t.interval(CONFIDENCE, len(values) - 1, loc=mean, scale=sem)
    return max(float(low), bounds[0]), min(float(high), bounds[1])


def metric_bounds(metric: str) -> tuple[float, float]:
    """The values a run's metric can take: accuracies are percentages; times and epoch counts
    are never negative."""
    if "accuracy" in metric or metric.endswith("_acc"):
        return 0.0, 100.0
    if metric.endswith(("_time", "epoch", "epochs", "epochs_run")):
        return 0.0, math.inf
    return UNBOUNDED


def probability_of_improvement(differences) -> float:
    """P(A > B) from paired differences A - B; a tie counts one half."""
    d = np.asarray(differences, dtype=float)
    return float(np.mean((d > 0) + 0.5 * (d == 0)))


def improvement_interval(differences) -> tuple[float, float]:
    """Wilson score 95% interval of P(A > B) over the pairs (a tie counts one half)."""
    d = np.asarray(differences, dtype=float)
    if len(d) == 0:
        return math.nan, math.nan
    wins = float((d > 0).sum() + 0.5 * (d == 0).sum())
    low, high = proportion_confint(wins, len(d), alpha=ALPHA, method="wilson")
    return float(low), float(high)


def configuration_summary(frame: pd.DataFrame, metric: str, keys: list[str]) -> pd.DataFrame:
    """Mean of ``metric`` per configuration (over seeds) with a t 95% interval and the
    seed-to-seed standard deviation."""
    rows = []
    for key, group in frame.dropna(subset=[metric]).groupby(keys, sort=False, dropna=False):
        values = group[metric].to_numpy(float)
        low, high = mean_interval(values, metric_bounds(metric))
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
    difference_ci: tuple[float, float]  # t interval
    p_a_greater: float  # P(A > B)
    p_ci: tuple[float, float]  # Wilson interval
    sign_p: float  # two-sided exact sign test
    adjusted_p: float  # sign_p, Holm-adjusted over the table it is part of (else sign_p)

    @property
    def outcome(self) -> str:
        """'greater' (A > B), 'less' (A < B), or 'indistinguishable': a verdict needs the
        interval of P(A > B) clear of 0.5 and the (adjusted) sign test below ALPHA."""
        low, high = self.p_ci
        if self.pairs < MIN_PAIRS or math.isnan(low) or not self.adjusted_p < ALPHA:
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
    """Pair runs with ``factor == a`` and ``factor == b`` that match on everything else, one to
    one: where a configuration and seed was run more than once (a spec changed and run again),
    its latest finished run stands for it."""
    keys = [k for k in pairing_keys(frame, factor, factors) if k in frame.columns]
    order = "ended_at" if "ended_at" in frame.columns else "index"
    sides = []
    for level in (a, b):
        side = frame[frame[factor] == level].dropna(subset=[metric])
        if order in side.columns:
            side = side.sort_values(order, kind="stable")
        sides.append(side.drop_duplicates(subset=keys, keep="last"))
    merged = sides[0].merge(sides[1], on=keys, suffixes=("_a", "_b"), validate="one_to_one")
    values_a = merged[f"{metric}_a"].to_numpy(float)
    values_b = merged[f"{metric}_b"].to_numpy(float)
    differences = values_a - values_b
    nan = math.nan
    if len(differences) == 0:
        return Comparison(factor, str(a), str(b), metric, 0, nan, nan, nan, (nan, nan), nan,
                          (nan, nan), nan, nan)  # fmt: skip
    p = sign_test(differences)
    return Comparison(
        factor=factor, a=str(a), b=str(b), metric=metric, pairs=len(differences),
        mean_a=float(values_a.mean()), mean_b=float(values_b.mean()),
        mean_difference=float(differences.mean()),
        difference_ci=mean_interval(differences),
        p_a_greater=probability_of_improvement(differences),
        p_ci=improvement_interval(differences),
        sign_p=p, adjusted_p=p,
    )  # fmt: skip


def holm_adjusted(p_values: list[float]) -> np.ndarray:
    """Holm's step-down adjustment: the k-th smallest of m p-values times (m - k + 1), made
    non-decreasing in that order, at most 1. The same values as statsmodels'
    ``multipletests(method="holm")`` (tests/test_report.py compares them), which runs a full
    ``gc.collect()`` at each call: 0.25 s in a report's process, once per claim and table."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    steps = np.arange(len(p), 0, -1)  # m, m - 1, ..., 1
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(p[order] * steps), 1.0)
    return adjusted


def holm(comparisons: list[Comparison]) -> list[Comparison]:
    """The comparisons with their sign tests Holm-adjusted over all of them (a table)."""
    tested = [i for i, c in enumerate(comparisons) if not math.isnan(c.sign_p)]
    if not tested:
        return comparisons
    adjusted = holm_adjusted([comparisons[i].sign_p for i in tested])
    result = list(comparisons)
    for i, p in zip(tested, adjusted, strict=True):
        result[i] = dataclasses.replace(result[i], adjusted_p=float(p))
    return result


def factor_comparisons(
    frame: pd.DataFrame, factors: list[str], metric: str, parents: dict[str, str]
) -> list[tuple[str, Comparison]]:
    """Every pair of levels of every factor, as (context, Comparison), where any pair matched,
    their sign tests Holm-adjusted over the whole list.

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
    adjusted = holm([c for _, c in rows])
    return [(context, c) for (context, _), c in zip(rows, adjusted, strict=True)]
