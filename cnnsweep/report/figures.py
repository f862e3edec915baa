"""The report's figures, one function each. Every function draws a small frame that gather.py
prepared (filtering, grouping and averaging happen there), and returns a ``ReportFigure`` with
its caption; which figures a study gets is chosen by build.py from its grid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip
JITTER = 0.08  # horizontal spread of points in a strip, in category widths
LABELS = {
    "test_accuracy": "test accuracy (%)", "val_accuracy": "validation accuracy (%)",
    "train_accuracy": "training accuracy, in training (%)",
    "train_eval_accuracy": "training accuracy, eval mode (%)",
    "best_train_acc": "best training accuracy (%)", "overfit_gap": "train − test gap (points)",
    "train_time": "training time (s)", "epochs_trained": "epochs trained",
    "epochs_run": "best epoch", "images_per_second": "training images/s",
}  # fmt: skip
WHOLE_NUMBERS = frozenset({"epochs_trained", "epochs_run"})


@dataclass
class ReportFigure:
    key: str  # file stem, e.g. "test_accuracy_by_optimizer"
    title: str
    caption: str
    figure: Figure


def label(metric: str) -> str:
    return LABELS.get(metric, metric.replace("_", " "))


def file_stem(*parts: str) -> str:
    """A safe file name from metric and factor names (a grid axis may be named anything)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(parts))


def _colours(levels) -> dict[str, str]:
    return {str(level): PALETTE[i % len(PALETTE)] for i, level in enumerate(levels)}


def _new(width=7.0, height=4.2) -> tuple[Figure, plt.Axes]:
    figure, ax = plt.subplots(figsize=(width, height), dpi=110, layout="constrained")
    ax.grid(axis="y", alpha=0.3)
    return figure, ax


def metric_by_factor(points: pd.DataFrame, factor: str, metric: str, note: str) -> ReportFigure:
    """Box (quartiles, median) and every run as a point, per level of ``factor``; ``points``
    is gather.by_level's frame. Whole-number metrics (epochs) keep whole-number positions."""
    levels = list(points["level"].cat.categories)
    figure, ax = _new(max(4.5, 1.3 * len(levels) + 2.5), 4.0)
    rng = np.random.default_rng(len(points))
    seeds = _colours(dict.fromkeys(points["seed"]))
    for i, level in enumerate(levels):
        values = points.loc[points["level"] == level, "value"].to_numpy(float)
        if not len(values):
            continue
        ax.boxplot(values, positions=[i], widths=0.5, showfliers=False,
                   medianprops={"color": "black"})  # fmt: skip
        part = points[points["level"] == level]
        x = i + rng.uniform(-JITTER, JITTER, len(part))  # sideways only: values stay exact
        ax.scatter(x, part["value"], s=22, zorder=3, alpha=0.85, edgecolor="white",
                   linewidth=0.5, color=[seeds[str(s)] for s in part["seed"]])  # fmt: skip
    if metric in WHOLE_NUMBERS and len(points):
        ax.set_ylim(points["value"].min() - 1, points["value"].max() + 1)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xticks(range(len(levels)), levels)
    ax.set_xlabel(factor)
    ax.set_ylabel(label(metric))
    if len(seeds) > 1:
        for seed, colour in seeds.items():
            ax.scatter([], [], color=colour, s=22, label=f"seed {seed}")
        ax.legend(frameon=False, fontsize=8, title="points", title_fontsize=8)
    title = f"{label(metric).split(' (')[0].capitalize()} by {factor}"
    ax.set_title(title)
    caption = (f"{label(metric).capitalize()} of every finished run (points, coloured by seed) "
               f"and its distribution (boxes: quartiles and median) per level of {factor}. "
               f"{note}.")  # fmt: skip
    return ReportFigure(file_stem(metric, "by", factor), title, caption, figure)


def interaction(means: pd.DataFrame, across: str, lines: str, metric: str) -> ReportFigure:
    """Mean of ``metric`` per level of ``across``, one line per level of ``lines`` with 95%
    intervals: parallel lines mean the two factors act independently."""
    figure, ax = _new(6.5, 4.2)
    positions = {level: i for i, level in enumerate(means["x"].cat.categories)}
    colours = _colours(dict.fromkeys(means["line"]))
    offsets = np.linspace(-0.06, 0.06, max(1, len(colours)))
    for offset, (line, part) in zip(offsets, means.groupby("line", sort=False), strict=False):
        x = np.array([positions[v] for v in part["x"]]) + offset
        low = (part["mean"] - part["low"]).fillna(0).clip(lower=0)
        high = (part["high"] - part["mean"]).fillna(0).clip(lower=0)
        ax.errorbar(x, part["mean"], yerr=[low, high], marker="o", capsize=3,
                    color=colours[line], label=f"{lines} = {line}")  # fmt: skip
    ax.set_xticks(range(len(positions)), list(positions))
    ax.set_xlabel(across)
    ax.set_ylabel(f"mean {label(metric)}")
    ax.legend(frameon=False, fontsize=8)
    title = f"Interaction of {across} and {lines}"
    ax.set_title(title)
    caption = (f"Mean {label(metric)} for each combination of the two factors that matter most, "
               f"{across} and {lines}, with t 95% intervals. Parallel lines: each factor "
               "acts the same whatever the other's level; crossing lines: the best level of one "
               "depends on the other.")  # fmt: skip
    return ReportFigure(file_stem("interaction", across, lines), title, caption, figure)


def train_vs_test(points: pd.DataFrame, colour: str | None, note: str) -> ReportFigure:
    """Training against test accuracy per run; the gap to the diagonal is the overfitting."""
    figure, ax = _new(6.0, 5.0)
    colours = _colours(dict.fromkeys(points["group"]))
    for group, part in points.groupby("group", sort=False):
        ax.scatter(part["train"], part["test"], color=colours[group], s=30, alpha=0.8,
                   edgecolor="white", linewidth=0.5,
                   label=f"{colour} = {group}" if colour else None)  # fmt: skip
    ax.plot([0, 100], [0, 100], color="gray", lw=1, ls="--", label="train = test")
    ax.set(xlim=(0, 100), ylim=(0, 100), xlabel="training accuracy (%)",
           ylabel="test accuracy (%)", title="Training vs test accuracy")  # fmt: skip
    ax.legend(frameon=False, fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    honest = (points["basis"] == "eval-mode").all() if len(points) else True
    basis = ("training accuracy in eval mode (a fixed subset of the training split, dropout off)"
             if honest else "training accuracy in eval mode where measured, else the "
             "in-training accuracy (dropout on: it understates a dropout run's gap)")  # fmt: skip
    gap = (points["train"] - points["test"]).median()
    caption = (
        f"{basis.capitalize()} against test accuracy, one point per run; points far below "
        f"the diagonal overfit. Median train − test gap: {gap:.1f} points. {note}."
    )
    return ReportFigure("train_vs_test", "Training vs test accuracy", caption, figure)


def learning_curves(lines: pd.DataFrame, metric: str, panels: list[str], colour: str | None
                    ) -> ReportFigure:  # fmt: skip
    """One panel per combination of ``panels`` levels, one line per run, coloured by
    ``colour``'s level; ``lines`` is gather.curves's frame."""
    names = list(dict.fromkeys(lines["panel"])) or ["all runs"]
    columns = min(4, len(names))
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns + 0.6, 2.5 * rows + 0.8),
                                dpi=110, sharex=True, sharey=True, squeeze=False,
                                layout="constrained")  # fmt: skip
    colours = _colours(dict.fromkeys(lines["colour"]))
    for ax, name in zip(axes.flat, names, strict=False):
        for (_, level), run in lines[lines["panel"] == name].groupby(["run_id", "colour"],
                                                                    sort=False):  # fmt: skip
            ax.plot(run["epoch"], run["value"], color=colours[level], lw=1, alpha=0.8,
                    label=f"{colour} = {level}" if colour else None)  # fmt: skip
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    handles = {h.get_label(): h for ax in axes.flat for h in ax.get_lines()}
    if colour and handles:
        figure.legend(handles.values(), handles.keys(), frameon=False, fontsize=8,
                      loc="outside lower center", ncols=min(5, len(handles)))  # fmt: skip
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for row in axes:
        row[0].set_ylabel(label(metric))
    grouped = f"one panel per {' and '.join(panels)}" if panels else "all runs in one panel"
    coloured = f"; colour marks {colour}" if colour else ""
    runs = lines["run_id"].nunique()
    caption = (f"{label(metric).capitalize()} per epoch, one line per run, {grouped}{coloured}. "
               f"{runs} runs with a recorded history (running runs included).")  # fmt: skip
    return ReportFigure("learning_curves", "Learning curves", caption, figure)


def optimisation_history(points: pd.DataFrame, metric: str) -> ReportFigure:
    """Every trial's value in the order drawn, and the best so far (gather.trial_history)."""
    figure, ax = _new(7.0, 4.0)
    done = points[~points["pruned"]]
    pruned = points[points["pruned"]]
    ax.scatter(done["trial"], done["value"], s=24, color=PALETTE[0], label="finished", zorder=3)
    if len(pruned):
        ax.scatter(pruned["trial"], pruned["value"], s=30, marker="x", color=PALETTE[1],
                   label="pruned (value when stopped)", zorder=3)  # fmt: skip
    ax.step(points["trial"], points["best"], where="post", color="black", lw=1.2,
            label="best so far")  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="trial", ylabel=label(metric), title="Optimisation history")
    ax.legend(frameon=False, fontsize=8)
    caption = (
        f"{label(metric).capitalize()} of each trial in the order the sampler drew it, and "
        f"the best finished one so far. {len(done)} finished, {len(pruned)} pruned."
    )
    return ReportFigure("optimisation_history", "Optimisation history", caption, figure)


def metric_vs_setting(points: pd.DataFrame, setting: str, metric: str, log: bool) -> ReportFigure:
    """A searched numeric setting against the metric, one point per trial (gather.by_setting)."""
    figure, ax = _new(6.0, 4.0)
    for pruned, part in points.groupby("pruned"):
        ax.scatter(part["value"], part["metric"], s=26, marker="x" if pruned else "o",
                   color=PALETTE[1] if pruned else PALETTE[0],
                   label="pruned" if pruned else "finished", zorder=3)  # fmt: skip
    if log:
        ax.set_xscale("log")
    ax.set(xlabel=setting + (" (log scale)" if log else ""), ylabel=label(metric),
           title=f"{label(metric).split(' (')[0].capitalize()} by {setting}")  # fmt: skip
    ax.legend(frameon=False, fontsize=8)
    caption = (
        f"{label(metric).capitalize()} of each trial against the {setting} the sampler "
        f"chose; where it concentrates its draws is where it expects the best."
    )
    return ReportFigure(file_stem(metric, "by", setting), f"{metric} by {setting}", caption,
                        figure)  # fmt: skip
