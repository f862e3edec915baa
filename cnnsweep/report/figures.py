"""The report's figures, one function each. Every function takes the tidy frame (and, for the
learning curves, the per-epoch history) and returns a ``Figure`` with its caption; drawing is
kept apart from gathering, so a figure can be redrawn from any frame of the same columns.

1. test accuracy by optimizer and regularisation; 2. test accuracy across learning rates per
optimizer; 3. train vs test accuracy; 4. training time by batch size and optimizer; 5. epochs
until early stopping per split; 6. learning curves by configuration family.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

COLORS = {"batch_norm": "#1f77b4", "dropout": "#d62728", "both": "#9467bd", "none": "#7f7f7f"}
OPTIMIZER_MARKERS = {"adam": "o", "sgd": "s", "rmsprop": "^"}
OPTIMIZER_COLORS = ("#2ca02c", "#ff7f0e", "#8c564b", "#17becf", "#bcbd22")
JITTER = 0.08  # horizontal spread of points in a strip, in category widths


@dataclass
class ReportFigure:
    key: str  # file stem, e.g. "fig1_accuracy_by_optimizer"
    title: str
    caption: str
    figure: Figure


def _counts_note(frame: pd.DataFrame) -> str:
    finished = int(frame["finished"].sum())
    rest = len(frame) - finished
    note = f"{finished} finished run{'s' if finished != 1 else ''}"
    return note + (f" ({rest} unfinished or failed run{'s' if rest != 1 else ''} not drawn)"
                   if rest else "")  # fmt: skip


def _strip(ax, positions: float, values: np.ndarray, color: str, rng, marker="o") -> None:
    x = positions + rng.uniform(-JITTER, JITTER, len(values))
    ax.scatter(x, values, s=22, color=color, alpha=0.8, edgecolor="white", linewidth=0.5,
               marker=marker, zorder=3)  # fmt: skip


def _boxes_with_points(
    ax, groups: list[tuple[str, str, np.ndarray]], rng, colors: dict[str, str] = COLORS
) -> None:
    """One box per (category, hue) group with every run drawn as a point on top."""
    categories = list(dict.fromkeys(c for c, _, _ in groups))
    hues = list(dict.fromkeys(h for _, h, _ in groups))
    width = 0.8 / max(1, len(hues))
    for c_index, category in enumerate(categories):
        for h_index, hue in enumerate(hues):
            values = next((v for c, h, v in groups if c == category and h == hue), None)
            if values is None or len(values) == 0:
                continue
            x = c_index + (h_index - (len(hues) - 1) / 2) * width
            color = colors.get(hue, "#444444")
            ax.boxplot(values, positions=[x], widths=width * 0.8, showfliers=False,
                       patch_artist=True, boxprops={"facecolor": color, "alpha": 0.25},
                       medianprops={"color": color})  # fmt: skip
            _strip(ax, x, values, color, rng)
    ax.set_xticks(range(len(categories)), categories)
    for hue in hues:
        ax.scatter([], [], color=colors.get(hue, "#444444"), label=hue)
    if len(hues) > 1:
        ax.legend(frameon=False)


def _new(width=7.0, height=4.2) -> tuple[Figure, plt.Axes]:
    figure, ax = plt.subplots(figsize=(width, height), dpi=110, layout="constrained")
    ax.grid(axis="y", alpha=0.3)
    return figure, ax


def accuracy_by_optimizer(frame: pd.DataFrame) -> ReportFigure:
    done = frame[frame["finished"]]
    rng = np.random.default_rng(1)
    figure, ax = _new()
    groups = [(opt, reg, part["test_accuracy"].to_numpy())
              for (opt, reg), part in done.groupby(["optimizer", "regularization_kind"],
                                                   sort=False)]  # fmt: skip
    _boxes_with_points(ax, groups, rng)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy by optimizer and regularisation")
    caption = (
        "Test accuracy of every run (points) and its distribution (boxes: quartiles and "
        "median) per optimizer, batch norm vs dropout. " + _counts_note(frame) + "."
    )
    return ReportFigure("fig1_accuracy_by_optimizer", "Accuracy by optimizer and regularisation",
                        caption, figure)  # fmt: skip


def accuracy_by_learning_rate(frame: pd.DataFrame) -> ReportFigure:
    done = frame[frame["finished"]]
    optimizers = list(dict.fromkeys(done["optimizer"])) or ["(none)"]
    figure, axes = plt.subplots(
        1, len(optimizers), figsize=(3.2 * len(optimizers) + 0.8, 3.8), dpi=110, sharey=True,
        layout="constrained", squeeze=False,
    )  # fmt: skip
    rng = np.random.default_rng(2)
    for ax, optimizer in zip(axes[0], optimizers, strict=True):
        part = done[done["optimizer"] == optimizer]
        rates = sorted(part["lr"].unique())
        for i, rate in enumerate(rates):
            for reg, sub in part[part["lr"] == rate].groupby("regularization_kind"):
                _strip(ax, i, sub["test_accuracy"].to_numpy(), COLORS.get(reg, "#444"), rng)
        means = [part.loc[part["lr"] == r, "test_accuracy"].mean() for r in rates]
        ax.plot(range(len(rates)), means, color="black", marker="_", markersize=20, lw=1)
        ax.set_xticks(range(len(rates)), [f"{r:g}" for r in rates])
        ax.set_xlim(-0.5, len(rates) - 0.5)
        ax.set_title(optimizer)
        ax.set_xlabel("learning rate")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    for reg in dict.fromkeys(done["regularization_kind"]):
        axes[0][-1].scatter([], [], color=COLORS.get(reg, "#444"), label=reg)
    axes[0][-1].legend(frameon=False, fontsize=8)
    caption = (
        "Test accuracy at each learning rate, one panel per optimizer; the black line "
        "joins the means. " + _counts_note(frame) + "."
    )
    return ReportFigure("fig2_accuracy_by_learning_rate", "Accuracy across learning rates",
                        caption, figure)  # fmt: skip


def train_vs_test(frame: pd.DataFrame) -> ReportFigure:
    done = frame[frame["finished"]]
    figure, ax = _new(6.0, 5.0)
    for (reg, opt), part in done.groupby(["regularization_kind", "optimizer"]):
        ax.scatter(part["best_train_acc"], part["test_accuracy"], color=COLORS.get(reg, "#444"),
                   marker=OPTIMIZER_MARKERS.get(opt, "D"), s=30, alpha=0.8,
                   label=f"{reg}, {opt}", edgecolor="white", linewidth=0.5)  # fmt: skip
    ax.plot([0, 100], [0, 100], color="gray", lw=1, ls="--", label="train = test")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_xlabel("best training accuracy (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Train vs test accuracy")
    ax.legend(frameon=False, fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    gap = done["overfit_gap"]
    caption = ("Best training accuracy against test accuracy, one point per run; points far "
               "below the diagonal overfit (high training, low test accuracy). Median train-test "
               f"gap: {gap.median():.1f} points. " + _counts_note(frame) + ".")  # fmt: skip
    return ReportFigure("fig3_train_vs_test", "Train vs test accuracy", caption, figure)


def time_by_batch_size(frame: pd.DataFrame) -> ReportFigure:
    done = frame[frame["finished"]]
    figure, ax = _new()
    rng = np.random.default_rng(4)
    groups = []
    for (batch, opt), part in done.groupby(["batch_size", "optimizer"], sort=True):
        groups.append((f"batch {batch}", opt, part["train_time"].to_numpy()))
    palette = dict(zip(dict.fromkeys(done["optimizer"]), OPTIMIZER_COLORS, strict=False))
    _boxes_with_points(ax, groups, rng, palette)
    ax.set_ylabel("training time (s)")
    ax.set_title("Training time by batch size and optimizer")
    caption = (
        "Wall-clock training time of each run (until early stopping) by batch size and "
        "optimizer. " + _counts_note(frame) + "."
    )
    return ReportFigure("fig4_time_by_batch_size", "Training time", caption, figure)


def epochs_by_split(frame: pd.DataFrame) -> ReportFigure:
    done = frame[frame["finished"]]
    figure, ax = _new(5.5, 4.0)
    rng = np.random.default_rng(5)
    splits = sorted(done["train_pct"].unique())
    for i, split in enumerate(splits):
        values = done.loc[done["train_pct"] == split, "epochs_trained"].to_numpy(float)
        ax.boxplot(values, positions=[i], widths=0.5, showfliers=False)
        _strip(ax, i, values, "#1f77b4", rng)  # whole epochs: jittered sideways only
    if len(done):  # at least a whole epoch either side, so that integer ticks can be found
        ax.set_ylim(done["epochs_trained"].min() - 1, done["epochs_trained"].max() + 1)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xticks(range(len(splits)),
                  [f"{round(s * 100)}/{round((1 - s) * 100)}" for s in splits])  # fmt: skip
    ax.set_xlabel("train / held-out split (%)")
    ax.set_ylabel("epochs until early stopping")
    ax.set_title("Epochs until early stopping by split")
    caption = ("Epochs each run trained before early stopping (or the epoch limit), per split. "
               + _counts_note(frame) + ".")  # fmt: skip
    return ReportFigure("fig5_epochs_by_split", "Epochs until early stopping", caption, figure)


def learning_curves(frame: pd.DataFrame, history: pd.DataFrame, metric: str) -> ReportFigure:
    """One panel per (optimizer, regularisation) family; one line per run, coloured by lr."""
    families = list(dict.fromkeys(zip(frame["optimizer"], frame["regularization_kind"],
                                      strict=True)))  # fmt: skip
    columns = max(1, len({f[1] for f in families}))
    rows = max(1, len({f[0] for f in families}))
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns + 0.6, 2.6 * rows + 0.6),
                                dpi=110, sharex=True, sharey=True, squeeze=False,
                                layout="constrained")  # fmt: skip
    optimizers = list(dict.fromkeys(f[0] for f in families))
    kinds = list(dict.fromkeys(f[1] for f in families))
    cmap = plt.get_cmap("viridis")
    drawn = 0
    for optimizer, kind in families:
        ax = axes[optimizers.index(optimizer)][kinds.index(kind)]
        runs = frame[(frame["optimizer"] == optimizer) & (frame["regularization_kind"] == kind)]
        rates = sorted(runs["lr"].unique())
        for _, run in runs.iterrows():
            curve = history[history["run_id"] == run["run_id"]]
            if curve.empty or metric not in curve:
                continue
            shade = cmap(0.15 + 0.7 * rates.index(run["lr"]) / max(1, len(rates) - 1))
            ax.plot(curve["epoch"], curve[metric], color=shade, lw=1, alpha=0.8,
                    label=f"lr {run['lr']:g}")  # fmt: skip
            drawn += 1
        ax.set_title(f"{optimizer}, {kind}", fontsize=9)
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        if unique:
            ax.legend(unique.values(), unique.keys(), frameon=False, fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for row in axes:
        row[0].set_ylabel(metric.replace("_", " ") + " (%)")
    caption = (f"{metric.replace('_', ' ').capitalize()} per epoch, one line per run, grouped by "
               f"optimizer and regularisation; colour marks the learning rate. {drawn} runs with "
               "a recorded history (running runs included).")  # fmt: skip
    return ReportFigure("fig6_learning_curves", "Learning curves", caption, figure)


def all_figures(frame: pd.DataFrame, history: pd.DataFrame, curve_metric: str):
    return [
        accuracy_by_optimizer(frame),
        accuracy_by_learning_rate(frame),
        train_vs_test(frame),
        time_by_batch_size(frame),
        epochs_by_split(frame),
        learning_curves(frame, history, curve_metric),
    ]
