"""What mattered in a study: each varied factor's effect on a metric, ranked by the share of the
metric's variance it explains, and whether the study's seeds can tell configurations apart.

The variance shares come from an ANOVA over the grid (statsmodels: an ordinary least-squares fit
of the metric on every varied factor as a categorical main effect, type II sums of squares). A
factor whose levels depend on another (the learning rates chosen per optimizer) enters as its
rank within that factor (the higher vs the lower rate), which is what the grid varies.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cnnsweep.report.stats import with_ranks
from cnnsweep.results import LOWER_IS_BETTER

POWER = 0.8  # the chance of detecting a real difference that the "detectable" figure assumes
ALPHA = 0.05


@dataclass(frozen=True)
class FactorEffect:
    factor: str
    term: str  # how it entered the model, e.g. "lr (rank within optimizer)"
    share: float  # eta squared: its sum of squares over the metric's total (0-1; NaN: unknown)
    p_value: float  # F test of its main effect (NaN without residual degrees of freedom)
    level_means: list[tuple[str, float, int]]  # (level, mean, runs), best first
    metric: str

    @property
    def best_level(self) -> str:
        return self.level_means[0][0]

    @property
    def spread(self) -> float:
        """Best level's mean minus worst level's mean (in the metric's units, >= 0)."""
        return abs(self.level_means[0][1] - self.level_means[-1][1])


def better_first(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (accuracies) or worse (loss, time)."""
    return metric not in LOWER_IS_BETTER


def finished_runs(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    done = frame[frame["finished"]] if "finished" in frame else frame
    return done.dropna(subset=[metric]) if metric in done else done.iloc[0:0]


def varied_factors(frame: pd.DataFrame, factors: list[str]) -> list[str]:
    """The factors with at least two levels among these runs (a factor with one level is fixed,
    and nothing is drawn or ranked for it)."""
    return [f for f in factors if f in frame and frame[f].nunique(dropna=True) >= 2]


def factor_effects(
    frame: pd.DataFrame, factors: list[str], metric: str, parents: dict[str, str]
) -> list[FactorEffect]:
    """The varied factors' effects on ``metric`` over the finished runs, largest share first."""
    done = finished_runs(frame, metric)
    varied = varied_factors(done, factors)
    if not varied or len(done) < 3:
        return []
    ranked = with_ranks(done, varied)
    columns, terms = {}, {}
    for factor in varied:
        parent = parents.get(factor)
        dependent = parent in varied and f"{factor}_rank" in ranked
        source = (ranked[f"{factor}_rank"] if dependent else ranked[factor]).astype(str)
        if source.nunique() < 2:  # one value per level of its parent: not separable from it
            terms[factor] = f"{factor} (set by {parent}: not separable from it)"
            continue
        columns[factor] = source.to_numpy()
        terms[factor] = f"{factor} (rank within {parent})" if dependent else factor
    modelled = list(columns)
    design = pd.DataFrame({f"x{i}": columns[f] for i, f in enumerate(modelled)})
    shares, p_values = _anova(design, done[metric].to_numpy(float), len(modelled))
    share_of = dict(zip(modelled, shares, strict=True))
    p_of = dict(zip(modelled, p_values, strict=True))
    effects = []
    for factor in varied:
        means = done.groupby(factor, sort=False)[metric].agg(["mean", "size"])
        order = means.sort_values("mean", ascending=not better_first(metric))
        level_means = [(str(level), float(row["mean"]), int(row["size"]))
                       for level, row in order.iterrows()]  # fmt: skip
        effects.append(FactorEffect(factor, terms[factor], share_of.get(factor, math.nan),
                                    p_of.get(factor, math.nan), level_means, metric))  # fmt: skip
    return sorted(effects, key=lambda e: -e.share if math.isfinite(e.share) else math.inf)


def _anova(design: pd.DataFrame, values: np.ndarray, count: int) -> tuple[list, list]:
    """Each term's share of the total sum of squares and its F-test p-value (type II)."""
    import statsmodels.formula.api as smf  # imported here: only the report needs it
    from statsmodels.stats.anova import anova_lm

    total = float(((values - values.mean()) ** 2).sum())
    nan = [math.nan] * count
    if total == 0 or count == 0:
        return nan, nan
    data = design.assign(y=values)
    formula = "y ~ " + " + ".join(f"C(x{i})" for i in range(count))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # a saturated design: no residual, no F test
        try:
            fit = smf.ols(formula, data=data).fit()
            table = anova_lm(fit, typ=2)
        except (ValueError, np.linalg.LinAlgError):  # factors confounded beyond separation
            return nan, nan
    shares, p_values = [], []
    for i in range(count):
        row = table.loc[f"C(x{i})"]
        share = float(row["sum_sq"]) / total
        shares.append(share if math.isfinite(share) else math.nan)
        p = float(row["PR(>F)"]) if fit.df_resid > 0 else math.nan
        p_values.append(p if math.isfinite(p) else math.nan)
    return shares, p_values


@dataclass(frozen=True)
class SeedSpread:
    """Seed-to-seed spread next to the differences between configurations."""

    metric: str
    seeds: int  # replicates (seeds, or seeds x folds) per configuration, median over them
    replicate: str  # what a replicate is: "seed" or "seed and fold"
    configurations: int
    within_sd: float  # pooled standard deviation over seeds, within a configuration
    between_sd: float  # standard deviation of the configurations' means
    detectable: float  # smallest difference of two configurations' means that this many seeds
    # detect with POWER at ALPHA (two-sided two-sample t test)
    best_gap: float  # the best configuration's mean minus the runner-up's

    @property
    def best_pair_separable(self) -> bool:
        return self.best_gap >= self.detectable

    @property
    def ratio(self) -> float:
        """Between-configuration spread over seed-to-seed spread (large: seeds matter little)."""
        return self.between_sd / self.within_sd if self.within_sd else math.inf


def seed_spread(frame: pd.DataFrame, metric: str) -> SeedSpread | None:
    """None unless some configuration ran with at least two seeds."""
    from statsmodels.stats.power import TTestIndPower

    done = finished_runs(frame, metric)
    groups = done.groupby("configuration", sort=False)[metric]
    stats = groups.agg(["mean", "var", "size"])
    repeated = stats[stats["size"] >= 2]
    if repeated.empty:
        return None
    within = math.sqrt(float(((repeated["size"] - 1) * repeated["var"]).sum()
                             / (repeated["size"] - 1).sum()))  # fmt: skip
    seeds = int(repeated["size"].median())
    effect = TTestIndPower().solve_power(nobs1=seeds, alpha=ALPHA, power=POWER, ratio=1.0)
    means = stats["mean"].sort_values(ascending=not better_first(metric))
    gap = abs(float(means.iloc[0] - means.iloc[1])) if len(means) >= 2 else math.nan
    between = float(means.std(ddof=1)) if len(means) >= 2 else math.nan
    replicate = (
        "seed and fold" if done.get("fold") is not None and done["fold"].notna().any() else "seed"
    )
    return SeedSpread(metric, seeds, replicate, len(stats), within, between,
                      float(effect) * within, gap)  # fmt: skip
