"""The report of a search study (``[search]``): its best trials, and which searched settings
mattered, by Optuna's PED-ANOVA importance evaluator on the finished trials (rebuilt in memory
from the results frame: the report never reads the store)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import optuna
import pandas as pd
from optuna.distributions import FloatDistribution, IntDistribution

from cnnsweep.results import LOWER_IS_BETTER
from cnnsweep.search import distributions
from cnnsweep.spec import study_from_document

log = logging.getLogger("cnnsweep.report")
BEST = 5  # trials listed


@dataclass(frozen=True)
class SearchSummary:
    sampler: str
    pruner: str
    budget: int
    drawn: int
    pruned: int
    best: pd.DataFrame  # the best finished trials: label, metric, epochs, stop reason
    importances: dict[str, float]  # setting -> importance (they sum to 1), largest first


def summarize(frame: pd.DataFrame, document: dict, metric: str) -> SearchSummary:
    """The search's summary; ``document`` is the stored study document (its spec's search)."""
    search = document["spec"]["search"]
    space = distributions(study_from_document(document))
    done = frame[frame["finished"]].dropna(subset=[metric])
    higher = metric not in LOWER_IS_BETTER
    best = done.sort_values(metric, ascending=not higher).head(BEST)
    best = best[["label", metric, "epochs_trained", "stop_reason"]].reset_index(drop=True)
    return SearchSummary(
        sampler=search.get("sampler", "tpe"),
        pruner=search.get("pruner") or "none",
        budget=int(search.get("trials", 0)),
        drawn=len(frame),
        pruned=int((frame["state"] == "pruned").sum()),
        best=best,
        importances=importances(done, space, metric, higher),
    )


def importances(done: pd.DataFrame, space: dict, metric: str, higher: bool) -> dict[str, float]:
    """PED-ANOVA importances of the searched settings over the finished trials (empty with
    fewer than 3 or when every trial scored the same)."""
    if len(done) < 3 or done[metric].nunique() < 2:
        return {}
    study = optuna.create_study(direction="maximize" if higher else "minimize")
    for _, row in done.iterrows():
        params = {}
        for name, distribution in space.items():
            value = row.get(name)
            if isinstance(distribution, IntDistribution):
                value = int(value)
            elif isinstance(distribution, FloatDistribution):
                value = float(value)
            elif value not in distribution.choices:  # a level read back as text or number
                value = next((c for c in distribution.choices if str(c) == str(value)), value)
            params[name] = value
        study.add_trial(optuna.trial.create_trial(params=params, distributions=space,
                                                  value=float(row[metric])))  # fmt: skip
    try:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError) as exc:  # too few trials for the evaluator
        log.warning("no parameter importances: %s", exc)
        return {}
    return {k: v for k, v in found.items() if not math.isnan(v)}
