"""Gathering for the figures: each function filters, groups and averages the tidy frame into
the small frame one figure draws. No drawing here (figures.py), no statistics (analysis.py)."""

from __future__ import annotations

import pandas as pd

from cnnsweep.report.stats import mean_interval, metric_bounds


def level_order(values: pd.Series) -> list:
    """A factor's levels in display order: numbers ascending, other levels as first met."""
    levels = list(dict.fromkeys(values.dropna()))
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in levels):
        return sorted(levels)
    return levels


def counts_note(frame: pd.DataFrame) -> str:
    """ "N finished runs (M unfinished or failed runs not drawn)", for captions."""
    finished = int(frame["finished"].sum())
    rest = len(frame) - finished
    note = f"{finished} finished run{'s' if finished != 1 else ''}"
    return note + (f" ({rest} unfinished or failed run{'s' if rest != 1 else ''} not drawn)"
                   if rest else "")  # fmt: skip


def by_level(frame: pd.DataFrame, factor: str, metric: str) -> pd.DataFrame:
    """One row per finished run: ``level`` (of ``factor``, as text, in display order),
    ``value`` (of ``metric``) and ``seed``."""
    done = frame[frame["finished"]].dropna(subset=[metric])
    order = [str(level) for level in level_order(done[factor])]
    points = pd.DataFrame({"level": done[factor].astype(str), "value": done[metric].astype(float),
                           "seed": done["seed"]})  # fmt: skip
    points["level"] = pd.Categorical(points["level"], categories=order, ordered=True)
    return points.sort_values("level", kind="stable").reset_index(drop=True)


def interaction_means(frame: pd.DataFrame, across: str, lines: str, metric: str) -> pd.DataFrame:
    """Mean of ``metric`` (with a t 95% interval) per level of ``across`` (the x axis)
    and of ``lines`` (one line each): ``x``, ``line``, ``mean``, ``low``, ``high``, ``runs``."""
    done = frame[frame["finished"]].dropna(subset=[metric])
    x_order = [str(v) for v in level_order(done[across])]
    rows = []
    for line in level_order(done[lines]):
        for x in x_order:
            values = done.loc[(done[lines] == line) & (done[across].astype(str) == x), metric]
            if values.empty:
                continue
            low, high = mean_interval(values.to_numpy(float), metric_bounds(metric))
            rows.append({"x": x, "line": str(line), "mean": float(values.mean()), "low": low,
                         "high": high, "runs": len(values)})  # fmt: skip
    means = pd.DataFrame(rows, columns=["x", "line", "mean", "low", "high", "runs"])
    means["x"] = pd.Categorical(means["x"], categories=x_order, ordered=True)
    return means


def train_test_points(frame: pd.DataFrame, colour: str | None) -> pd.DataFrame:
    """Per finished run: ``train`` (eval-mode training accuracy where measured, else the
    in-training one), ``test`` and ``group`` (the level of ``colour``, or "all")."""
    done = frame[frame["finished"]].dropna(subset=["test_accuracy"])
    train = done["train_eval_accuracy"].where(done["train_eval_accuracy"].notna(),
                                              done["best_train_acc"])  # fmt: skip
    group = done[colour].astype(str) if colour else pd.Series("all", index=done.index)
    return pd.DataFrame({"train": train, "test": done["test_accuracy"], "group": group,
                         "basis": done["overfit_basis"]}).dropna(subset=["train"])  # fmt: skip


def curves(
    frame: pd.DataFrame, history: pd.DataFrame, metric: str, panels: list[str], colour: str | None
) -> pd.DataFrame:
    """Long per-epoch frame of every run with a history: ``run_id``, ``epoch``, ``value``,
    ``panel`` (the levels of ``panels`` joined, e.g. "adam, batch_norm") and ``colour``."""
    columns = ["run_id", "epoch", "value", "panel", "colour"]
    if history.empty or metric not in history:
        return pd.DataFrame(columns=columns)
    runs = frame.set_index("run_id")
    long = history.dropna(subset=[metric]).merge(
        runs[[*panels, *([colour] if colour else [])]], left_on="run_id", right_index=True
    )
    if long.empty:  # no epoch has the metric: every run diverged in its first epoch, say
        return pd.DataFrame(columns=columns)
    for factor in reversed(panels):  # panels in the factors' display order
        position = {level: i for i, level in enumerate(level_order(frame[factor]))}
        long = long.sort_values(factor, key=lambda s, p=position: s.map(p), kind="stable")
    named = pd.DataFrame({f: f + "=" + long[f].astype(str) for f in panels}, index=long.index)
    panel = (named.agg(", ".join, axis=1) if panels
             else pd.Series("all runs", index=long.index))  # fmt: skip
    return pd.DataFrame({"run_id": long["run_id"], "epoch": long["epoch"].astype(int),
                         "value": long[metric].astype(float), "panel": panel,
                         "colour": long[colour].astype(str) if colour else "all"})  # fmt: skip


def trial_history(frame: pd.DataFrame, metric: str, higher: bool) -> pd.DataFrame:
    """A search's trials in the order drawn: ``trial`` (number), ``value``, ``pruned`` and
    ``best`` (the best finished value so far)."""
    ended = frame[(frame["finished"] | (frame["state"] == "pruned"))].dropna(subset=[metric])
    points = pd.DataFrame({"trial": ended["index"].astype(int),
                           "value": ended[metric].astype(float),
                           "pruned": ended["state"] == "pruned"}).sort_values("trial")  # fmt: skip
    finished = points["value"].where(~points["pruned"])
    points["best"] = (finished.cummax() if higher else finished.cummin()).ffill()
    return points.reset_index(drop=True)


def by_setting(frame: pd.DataFrame, setting: str, metric: str) -> pd.DataFrame:
    """Per finished or pruned run: ``value`` of a searched numeric setting, ``metric`` and
    ``pruned``."""
    ended = frame[(frame["finished"] | (frame["state"] == "pruned"))].dropna(subset=[metric])
    return pd.DataFrame({"value": pd.to_numeric(ended[setting], errors="coerce"),
                         "metric": ended[metric].astype(float),
                         "pruned": ended["state"] == "pruned"}).dropna()  # fmt: skip
