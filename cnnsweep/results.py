"""What one run produces: per-epoch metrics and the final result (no PyTorch here, so that the
store and the report can read results without importing it). Accuracies are percentages."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from cnnsweep.config import TrainConfig

StopReason = Literal["patience", "max_epochs", "diverged", "pruned"]

# The columns of the report's results_reduced.csv, in its order.
REPORT_COLUMNS = (
    "lr",
    "batch_size",
    "optimizer",
    "train_pct",
    "test_pct",
    "batch_norm",
    "dropout",
    "best_train_acc",
    "epochs_run",
    "test_accuracy",
    "train_time",
)


# The numeric results a study may rank factors by or a claim may be about (columns of the
# report's tidy frame; overfit_gap is the eval-mode training accuracy minus the test accuracy).
METRICS = (
    "test_accuracy", "overfit_gap", "best_train_acc", "train_eval_accuracy", "train_accuracy",
    "val_accuracy", "test_loss", "val_loss", "train_loss", "train_time", "epochs_trained",
    "epochs_run", "images_per_second",
)  # fmt: skip
# Metrics where lower is better; for the rest (accuracies, throughput) higher is better.
LOWER_IS_BETTER = frozenset({"overfit_gap", "test_loss", "val_loss", "train_loss", "train_time",
                             "epochs_trained", "epochs_run"})  # fmt: skip


def check_metric(metric: str) -> str:
    """``metric`` if it is one of METRICS, else a ValueError naming the valid ones."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid metrics: {', '.join(METRICS)}")
    return metric


class EpochMetrics(BaseModel):
    epoch: int  # 1-based
    train_loss: float
    train_accuracy: float
    val_loss: float | None = None
    val_accuracy: float | None = None
    # A fixed subset of the training split scored in eval mode (no dropout, batch norm's running
    # statistics): the honest training accuracy, for the overfitting gap (train_eval_images).
    train_eval_loss: float | None = None
    train_eval_accuracy: float | None = None
    epoch_time: float  # seconds: training and validation of this epoch
    images_per_second: float  # training images / training seconds


class RunResult(BaseModel):
    config: TrainConfig
    stop_reason: StopReason
    epochs_trained: int
    best_epoch: int  # epoch of the best monitored value (the report's "epochs_run")
    train_loss: float  # of the last epoch
    train_accuracy: float  # of the last epoch
    best_train_accuracy: float  # the report's "best_train_acc"
    train_eval_accuracy: float | None = None  # of the tested weights, in eval mode (see above)
    val_loss: float | None = None  # at the best epoch (holdout)
    val_accuracy: float | None = None
    test_loss: float
    test_accuracy: float  # official test set (holdout) or the held-out part (seed)
    train_time: float  # seconds of the epoch loop, final test excluded
    images_per_second: float  # mean training throughput over the epochs
    train_size: int
    val_size: int
    test_size: int
    device: str
    precision: str  # "bf16-autocast" or "fp32"
    normalization: str  # "report" (the report's constants) or "train" (computed from the split)
    history: list[EpochMetrics]
    # The epoch its checkpoint had saved when an interrupted run was retried (None: it trained
    # from the start); the history holds every epoch all the same.
    resumed_after_epoch: int | None = None

    def report_row(self) -> dict:
        """The report's CSV row (its column names and meanings, quirks included)."""
        return report_row(self.config.model_dump(), self.model_dump(exclude={"history"}))


def report_row(config: dict, result: dict | None) -> dict:
    """The report's CSV columns from a config and (if the run finished) its result.

    ``epochs_run`` is the best epoch and ``best_train_acc`` the best training accuracy, as the
    report's script records them; metrics of an unfinished run are None.
    """
    result = result or {}
    train_time = result.get("train_time")
    split = config["split"]
    if config.get("protocol") == "kfold":  # the folds that train, of all folds
        split = round((config["folds"] - 1) / config["folds"], 10)
    return {
        "lr": config["lr"],
        "batch_size": config["batch_size"],
        "optimizer": config["optimizer"],
        "train_pct": split,
        "test_pct": round(1 - split, 10),
        "batch_norm": config["batch_norm"],
        "dropout": config["dropout"],
        "best_train_acc": result.get("best_train_accuracy"),
        "epochs_run": result.get("best_epoch"),
        "test_accuracy": result.get("test_accuracy"),
        "train_time": round(train_time, 2) if train_time is not None else None,
    }
