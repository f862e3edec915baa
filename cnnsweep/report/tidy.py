"""From the results frame to the tidy frame the figures and statistics read.

Adds what the report's questions need: typed factor columns (from the spec's grid axes),
``regularization`` (batch_norm / dropout / both / none), ``overfit_gap`` (best training accuracy
minus test accuracy, in points) and ``finished`` (the run has metrics).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cnnsweep.schema import RunState

FINISHED_STATES = tuple(s.value for s in RunState if s.finished)  # runs with metrics


def regularization_label(batch_norm: bool, dropout: bool) -> str:
    if batch_norm and dropout:
        return "both"
    return "batch_norm" if batch_norm else "dropout" if dropout else "none"


def _typed(values: pd.Series) -> pd.Series:
    numeric = pd.to_numeric(values, errors="coerce")
    return numeric if numeric.notna().all() else values.astype(str)


def tidy_frame(results: pd.DataFrame, factors: list[str]) -> pd.DataFrame:
    frame = results.copy()
    frame["regularization_kind"] = [
        regularization_label(bool(bn), bool(do))
        for bn, do in zip(frame["batch_norm"], frame["dropout"], strict=True)
    ]
    for factor in factors:
        column = f"factor_{factor}"
        if column in frame.columns:
            frame[factor] = _typed(frame[column])
    frame["finished"] = frame["state"].isin(FINISHED_STATES) & frame["test_accuracy"].notna()
    frame["overfit_gap"] = frame["best_train_acc"] - frame["test_accuracy"]
    frame["configuration"] = frame["label"].str.replace(r" seed=\d+$", "", regex=True)
    for column in ("test_accuracy", "best_train_acc", "train_time", "epochs_trained"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    frame["lr"] = frame["lr"].astype(float)
    return frame.replace({np.inf: np.nan, -np.inf: np.nan})
