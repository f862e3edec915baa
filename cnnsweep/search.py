"""Search instead of a grid: a ``[search]`` study's runs are Optuna trials, sampled one at a time
by whichever worker is free (on any machine sharing the store), with an optional pruner that
stops runs falling behind on their per-epoch validation accuracy.

Each trial is one run: its sampled settings over the study's shared settings and seed, with a
run_id of its own (its settings' identity and its trial number). A pruned run is stored as pruned
and never retried; a run whose worker is lost is retried like any other.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from cnnsweep import identity
from cnnsweep.config import make_config
from cnnsweep.schema import level_label
from cnnsweep.spec import SearchRange, Study, integer_setting

# A trial's value is a test accuracy: the study maximises it. The pruner watches the per-epoch
# intermediate values, the validation accuracy (store.record_epoch).
DIRECTION = "maximize"


def distributions(study: Study) -> dict[str, BaseDistribution]:
    """The search space as Optuna distributions: ranges of integer settings as integers."""
    space: dict[str, BaseDistribution] = {}
    for name, values in study.spec.search.space.items():
        if isinstance(values, SearchRange):
            if integer_setting(name, values.low) and integer_setting(name, values.high):
                space[name] = IntDistribution(int(values.low), int(values.high), log=values.log)
            else:
                space[name] = FloatDistribution(values.low, values.high, log=values.log)
        else:
            space[name] = CategoricalDistribution(values)
    return space


def sampler(study: Study, draw: int) -> optuna.samplers.BaseSampler:
    """The spec's sampler, seeded by the study's seed and by how many trials were drawn before
    (so a serial search is reproducible, and concurrent workers do not draw alike)."""
    search = study.spec.search
    seed = (study.spec.seeds[0] * 1_000_003 + draw) % 2**32
    if search.sampler == "grid":
        return optuna.samplers.GridSampler(dict(search.space), seed=seed)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, search.trials))


def pruner(study: Study) -> optuna.pruners.BasePruner:
    """The spec's pruner (none: never prune). Median: stop a run whose validation accuracy is
    below the median of earlier runs at the same epoch, after 5 runs and 1 epoch of warm-up.
    Hyperband: successive halving over epochs, from 1 to the runs' epoch limit."""
    kind = study.spec.search.pruner
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if kind == "hyperband":
        max_epochs = make_config(**{**study.settings, "seed": 0}).max_epochs
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs)
    return optuna.pruners.NopPruner()


def run_of(study: Study, params: dict[str, Any], number: int, identity_version: int) -> dict:
    """The run a trial's sampled ``params`` make: attributes as for a grid run (schema.Attr)."""
    seed = study.spec.seeds[0]
    settings = {**study.settings, **params, "seed": seed}
    config = make_config(**settings)
    base = identity.run_id(settings, config.model_dump(mode="json"), identity_version)
    run_id = hashlib.sha256(f"{base}:trial={number}".encode()).hexdigest()[:16]
    parts = [f"{k}={_short(v)}" for k, v in params.items()]
    return {
        "run_id": run_id,
        "index": number,
        "label": " ".join([f"trial={number}", *parts, f"seed={seed}"]),
        "config": config.model_dump(mode="json"),
        "factors": {k: level_label(v) for k, v in params.items()},
    }


def _short(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return str(value)
