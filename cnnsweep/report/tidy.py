"""From the results frame to the tidy frame the figures and statistics read.

Adds what the report's questions need: typed factor columns (from the spec's grid axes),
``regularization_kind`` (batch_norm / dropout / both / none), ``overfit_gap`` and ``finished``
(the run has metrics).

The overfitting gap is the training accuracy *in eval mode* (a fixed subset of the training
split scored without dropout, with batch norm's running statistics: ``train_eval_accuracy``)
minus the test accuracy, for the weights that were tested. The in-training accuracy that the
seed report used is measured with dropout active, which shrinks a dropout run's gap; it is used
only for runs stored before cnnsweep measured the eval-mode accuracy, and ``overfit_basis``
says which a run's gap rests on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cnnsweep.schema import RunState

FINISHED_STATES = tuple(s.value for s in RunState if s.finished)  # runs with metrics
NUMERIC = ("test_accuracy", "best_train_acc", "train_eval_accuracy", "train_time",
           "epochs_trained", "epochs_run", "lr")  # fmt: skip


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
    if "train_eval_accuracy" not in frame.columns:
        frame["train_eval_accuracy"] = np.nan
    for column in NUMERIC:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    frame["finished"] = frame["state"].isin(FINISHED_STATES) & frame["test_accuracy"].notna()
    honest = frame["train_eval_accuracy"].notna()
    train = frame["train_eval_accuracy"].where(honest, frame["best_train_acc"])
    frame["overfit_gap"] = train - frame["test_accuracy"]
    frame["overfit_basis"] = np.where(honest, "eval-mode", "in-training")
    # A configuration is a run less its replicate: the seed and, for k-fold, the fold.
    frame["configuration"] = frame["label"].str.replace(r" seed=\d+( fold=\d+)?$", "", regex=True)
    if "fold" not in frame.columns:  # results stored before k-fold existed
        frame["fold"] = None
    return frame.replace({np.inf: np.nan, -np.inf: np.nan})
