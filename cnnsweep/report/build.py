"""``cnnsweep report``: a gathered study (frame.StudyData) -> ``report.html`` (self-contained),
the figures as PNG files, and ``results.csv``. Everything is written to a staging folder first and
moved into place at the end, report.html last, so a failure leaves no half-written report behind.

The report is about the study's own grid: what mattered (each varied factor ranked by its effect
on the study's metric), figures chosen by the grid, the seeds' spread, and, only when the study
names claims (``claims`` in its spec, or ``--claims``), those claims re-tested.
"""

from __future__ import annotations

import base64
import datetime
import io
import json
import math
import os
import platform
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import jinja2
import matplotlib.pyplot as plt
import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution

from cnnsweep import __version__
from cnnsweep.errors import CnnsweepError
from cnnsweep.frame import StudyData, write_table
from cnnsweep.report import gather
from cnnsweep.report.analysis import FactorEffect, factor_effects, seed_spread
from cnnsweep.report.figures import (
    ReportFigure,
    interaction,
    label,
    learning_curves,
    metric_by_factor,
    metric_vs_setting,
    optimisation_history,
    train_vs_test,
)
from cnnsweep.report.findings import claims_of, judge_claims, load_claims
from cnnsweep.report.search import SearchSummary, summarize
from cnnsweep.report.stats import MIN_PAIRS, Comparison, configuration_summary, factor_comparisons
from cnnsweep.report.tidy import tidy_frame
from cnnsweep.results import LOWER_IS_BETTER
from cnnsweep.schema import RunState
from cnnsweep.search import distributions
from cnnsweep.spec import study_from_document

COSTS = ("train_time", "epochs_trained")  # drawn by the factor that matters most for each


@dataclass
class ReportFiles:
    html: Path
    csv: Path
    figures: list[Path]
    summary: list[str] = field(default_factory=list)  # what the study found, a line each


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _interval(low: float, high: float) -> str:
    return "n too small" if math.isnan(low) else f"[{low:.2f}, {high:.2f}]"


def _p_value(p: float) -> str:
    return "" if math.isnan(p) else "< 0.001" if p < 0.001 else f"{p:.3f}"


def _png(figure) -> tuple[bytes, int, int]:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    width, height = (int(v) for v in figure.get_size_inches() * figure.dpi)
    plt.close(figure)
    return buffer.getvalue(), width, height


def _environment(envs: list[dict], document: dict) -> list[tuple[str, str]]:
    def values(key: str) -> str:
        return ", ".join(sorted({str(e.get(key)) for e in envs if e.get(key)})) or "–"

    return [
        ("devices", values("device_name") + f" ({values('device')})"),
        ("hosts", values("host")),
        ("torch", values("torch")),
        ("cuda", values("cuda")),
        ("python (workers)", values("python")),
        ("cnnsweep git commit", values("git_commit")),
        (
            "report by",
            f"cnnsweep {__version__}, optuna {optuna.__version__}, "
            f"python {platform.python_version()}",
        ),
        ("preset", str(document.get("preset") or "–")),
    ]


@dataclass
class Analysis:
    """What the page shows, computed from the tidy frame."""

    metric: str
    factors: list[str]
    effects: list[FactorEffect]  # varied factors, the most important first
    comparisons: list[tuple[str, Comparison]]
    findings: list
    figures: list[ReportFigure]
    search: SearchSummary | None = None  # a search study's trials and importances


def analyse(data: StudyData, claims_source: str | None) -> tuple[pd.DataFrame, Analysis]:
    spec = data.document.get("spec", {})
    results = data.results
    factors = list(spec.get("grid", {})) or [
        c.removeprefix("factor_") for c in results.columns if c.startswith("factor_")
    ]
    metric = spec.get("metric", "test_accuracy")
    frame = tidy_frame(results, factors)
    parents = {name: axis["by"] for name, axis in spec.get("grid", {}).items()
               if isinstance(axis, dict) and "by" in axis}  # fmt: skip
    claims = load_claims(claims_source)
    done = frame[frame["finished"]]
    findings = judge_claims(claims, frame, factors) if claims else []
    if spec.get("search"):  # sampled settings: trials and importances instead of a grid's ANOVA
        summary = summarize(frame, data.document, metric)
        figures = search_figures(frame, data.history, data.document, metric) if done.size else []
        return frame, Analysis(metric, factors, [], [], findings, figures, summary)
    effects = factor_effects(frame, factors, metric, parents)
    return frame, Analysis(
        metric=metric,
        factors=factors,
        effects=effects,
        comparisons=factor_comparisons(done, factors, metric, parents),
        findings=findings,
        # With no finished run there is nothing to draw (and matplotlib would only warn).
        figures=choose_figures(frame, data.history, effects, factors, parents, metric)
        if done.size
        else [],
    )


def choose_figures(
    frame: pd.DataFrame,
    history: pd.DataFrame,
    effects: list[FactorEffect],
    factors: list[str],
    parents: dict[str, str],
    metric: str,
) -> list[ReportFigure]:
    """The figures this grid calls for: the metric by each varied factor (most important
    first), the interaction of the two most important, time and epochs by the factor that
    matters most for each, training vs test accuracy, and learning curves grouped by the
    study's own axes. A factor with one level draws nothing."""
    note = gather.counts_note(frame)
    ranked = [e.factor for e in effects]
    figures = [metric_by_factor(gather.by_level(frame, f, metric), f, metric, note)
               for f in ranked]  # fmt: skip
    if len(ranked) >= 2:
        across, lines = ranked[0], ranked[1]
        means = gather.interaction_means(frame, across, lines, metric)
        figures.append(interaction(means, across, lines, metric))
    for cost in COSTS:
        if cost_effects := factor_effects(frame, factors, cost, parents):
            top = cost_effects[0].factor
            figures.append(metric_by_factor(gather.by_level(frame, top, cost), top, cost, note))
    colour = ranked[0] if ranked else None
    figures.append(train_vs_test(gather.train_test_points(frame, colour), colour, note))
    protocol = str(frame["config_protocol"].iloc[0])
    curve_metric = "train_accuracy" if protocol == "seed" else "val_accuracy"
    panels, colour = ranked[:2], (ranked[2] if len(ranked) > 2 else None)
    lines = gather.curves(frame, history, curve_metric, panels, colour)
    if not lines.empty:  # else no run has a curve to draw
        figures.append(learning_curves(lines, curve_metric, panels, colour))
    return figures


def search_figures(
    frame: pd.DataFrame, history: pd.DataFrame, document: dict, metric: str
) -> list[ReportFigure]:
    """A search's figures: the optimisation history, the metric against each searched numeric
    setting (and by each listed one), training vs test accuracy, and the learning curves (pruned
    runs' curves end where they were stopped)."""
    note = gather.counts_note(frame)
    higher = metric not in LOWER_IS_BETTER
    figures = [optimisation_history(gather.trial_history(frame, metric, higher), metric)]
    for name, distribution in distributions(study_from_document(document)).items():
        if name not in frame:
            continue
        if isinstance(distribution, CategoricalDistribution):
            if frame.loc[frame["finished"], name].nunique() >= 2:
                points = gather.by_level(frame, name, metric)
                figures.append(metric_by_factor(points, name, metric, note))
        else:
            points = gather.by_setting(frame, name, metric)
            figures.append(metric_vs_setting(points, name, metric, distribution.log))
    figures.append(train_vs_test(gather.train_test_points(frame, None), None, note))
    protocol = str(frame["config_protocol"].iloc[0])
    curve_metric = "train_accuracy" if protocol == "seed" else "val_accuracy"
    lines = gather.curves(frame, history, curve_metric, [], None)
    figures.append(learning_curves(lines, curve_metric, [], None))
    return figures


def build_report(data: StudyData, out_dir: Path, claims: str | None = None) -> ReportFiles:
    """Write the report of ``data`` into ``out_dir``. ``claims`` overrides the claims the study
    names (a built-in set such as "seed-report", or a TOML file)."""
    _check_writable(out_dir)  # before the analysis: its figures take seconds
    # A bad claims file fails here, before anything is written.
    frame, analysis = analyse(data, claims or claims_of(data.document))
    staging = _staging_folder(out_dir)
    try:
        pictures = []
        for fig in analysis.figures:
            png, width, height = _png(fig.figure)
            (staging / f"{fig.key}.png").write_bytes(png)
            pictures.append({"key": fig.key, "title": fig.title, "caption": fig.caption,
                             "data": base64.b64encode(png).decode(), "width": width,
                             "height": height})  # fmt: skip
        write_table(data.results, staging / "results.csv", "csv")
        html = _render(data, frame, analysis, pictures)
        (staging / "report.html").write_text(html, encoding="utf-8")
        moved = [_move(staging / f"{fig['key']}.png", out_dir) for fig in pictures]
        csv = _move(staging / "results.csv", out_dir)
        page = _move(staging / "report.html", out_dir)  # last: its presence means complete
    except OSError as exc:
        raise CnnsweepError(f"cannot write the report to {out_dir}: {exc.strerror}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ReportFiles(page, csv, moved, findings_summary(frame, analysis))


def precision_note(frame: pd.DataFrame, factors: list[str]) -> str | None:
    """A warning where the finished runs trained in more than one precision without the study
    asking for it (``amp`` is not one of its factors): bf16 autocast is used only where it runs
    natively, so machines with and without native bf16 (or a GPU and a CPU) working on one
    study train their runs differently, and a difference between configurations may partly be
    the machines'."""
    finished = frame[frame["finished"]]
    if "amp" in factors or "precision" not in finished or finished["precision"].nunique() < 2:
        return None
    counts = finished["precision"].value_counts()
    mixed = ", ".join(f"{precision} {count}" for precision, count in counts.items())
    return (
        f"the finished runs trained in {len(counts)} precisions ({mixed}): machines with "
        "and without native bf16 took part, so differences may partly be the machines'"
    )


def findings_summary(frame: pd.DataFrame, analysis: Analysis) -> list[str]:
    """What the study found, for the terminal: the best configuration, what mattered most, the
    claims' verdicts, and a note where the runs trained in mixed precisions."""
    metric = analysis.metric
    lines = []
    if best := _configurations(frame[frame["finished"]], metric)[:1]:
        top = best[0]
        spread = (f"mean of {top['runs']} runs, 95% CI {top['ci']}" if top["runs"] > 1
                  else "one run")  # fmt: skip
        if top["diverged"]:
            spread += f", {'all' if top['diverged'] == top['runs'] else top['diverged']} diverged"
        lines.append(f"best: {top['configuration']}: {metric} {top['mean']:.2f} ({spread})")
    ranked = [e for e in analysis.effects if e.share == e.share]  # NaN shares: unknown
    if ranked:
        parts = [f"{e.factor} ({e.share:.0%} of the variance, best {e.best_level})"
                 for e in ranked[:2]]  # fmt: skip
        lines.append("mattered most: " + ", then ".join(parts))
    if analysis.findings:
        counts = Counter(f.verdict for f in analysis.findings)
        verdicts = ", ".join(f"{counts[v]} {v}" for v in ("supported", "contradicted",
                                                          "inconclusive") if counts[v])  # fmt: skip
        lines.append(f"claims: {verdicts} (of {len(analysis.findings)})")
    if note := precision_note(frame, analysis.factors):
        lines.append(f"note: {note}")
    return lines


def _check_writable(out_dir: Path) -> None:
    """Fail now where the folder cannot be made or written, without making it (the write itself
    is still checked: this only saves the analysis's time)."""
    existing = next(p for p in (out_dir, *out_dir.parents) if p.exists())
    if not existing.is_dir():
        problem = "Not a directory"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = "Permission denied"
    else:
        return
    raise CnnsweepError(f"cannot write the report to {out_dir}: {problem}")


def _staging_folder(out_dir: Path) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = out_dir / f".report-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
    except OSError as exc:
        raise CnnsweepError(f"cannot write the report to {out_dir}: {exc.strerror}") from None
    return staging


def _move(path: Path, out_dir: Path) -> Path:
    target = out_dir / path.name
    path.replace(target)
    return target


def _run_row(row: pd.Series) -> dict:
    return {
        "run_id": row["run_id"], "index": row["index"], "configuration": row["configuration"],
        "seed": row["seed"], "state": row["state"], "stop_reason": row["stop_reason"],
        "test_accuracy": _fmt(row["test_accuracy"]),
        "best_train_acc": _fmt(row["best_train_acc"]),
        "train_eval_accuracy": _fmt(row["train_eval_accuracy"]),
        "val_accuracy": _fmt(row["val_accuracy"]),
        "epochs_trained": _fmt(row["epochs_trained"], 0),
        "epochs_run": _fmt(row["epochs_run"], 0),
        "train_time": _fmt(row["train_time"], 1),
        "attempts": row["attempts"],
        "error": row["error"] if isinstance(row["error"], str) else "",
        "traceback": row.get("traceback") if isinstance(row.get("traceback"), str) else "",
    }  # fmt: skip


def _comparison_row(context: str, c: Comparison) -> dict:
    higher, lower = (c.a, c.b) if c.metric not in LOWER_IS_BETTER else (c.b, c.a)
    return {
        "factor": c.factor, "context": context, "a": c.a, "b": c.b, "pairs": c.pairs,
        "difference": f"{c.mean_difference:+.2f}",
        "difference_ci": _interval(*c.difference_ci),
        "p": f"{c.p_a_greater:.2f}", "p_ci": _interval(*c.p_ci),
        "sign_p": _p_value(c.sign_p), "adjusted_p": _p_value(c.adjusted_p),
        "outcome": {"greater": f"{higher} better", "less": f"{lower} better"}.get(
            c.outcome, "not distinguishable"),
    }  # fmt: skip


def _effect_row(effect: FactorEffect, comparisons: list[tuple[str, Comparison]]) -> dict:
    """One row of "what mattered": the factor's share of variance, its levels' means, and its
    clearest paired comparison (the one whose P(A > B) is furthest from 0.5)."""
    own = [c for _, c in comparisons if c.factor == effect.factor and c.pairs]
    clearest = max(own, key=lambda c: abs(c.p_a_greater - 0.5), default=None)
    return {
        "factor": effect.factor, "term": effect.term,
        "share": "" if math.isnan(effect.share) else f"{100 * effect.share:.0f}%",
        "p": _p_value(effect.p_value),
        "levels": ", ".join(f"{level} {mean:.2f} ({n})" for level, mean, n in effect.level_means),
        "best": effect.best_level, "spread": f"{effect.spread:.2f}",
        "comparison": (f"{clearest.a} − {clearest.b} = {clearest.mean_difference:+.2f} "
                       f"{_interval(*clearest.difference_ci)}, P({clearest.a} > {clearest.b}) "
                       f"= {clearest.p_a_greater:.2f} over {clearest.pairs} pairs"
                       if clearest else "no matched pairs"),
    }  # fmt: skip


def _configurations(finished: pd.DataFrame, metric: str) -> list[dict]:
    """Each configuration's mean over its finished runs, best first, with how many of those
    runs diverged (they count, at the accuracy they had, but a best configuration that diverged
    must say so)."""
    summary = configuration_summary(finished, metric, ["configuration"])
    if summary.empty:
        return []
    higher = metric not in LOWER_IS_BETTER
    diverged = finished[finished["state"] == RunState.DIVERGED].groupby("configuration").size()
    return [
        {"configuration": row.configuration, "runs": row.runs, "mean": row.mean,
         "sd": _fmt(row.sd), "ci": _interval(row.ci_low, row.ci_high),
         "diverged": int(diverged.get(row.configuration, 0))}
        for row in summary.sort_values("mean", ascending=not higher).itertuples()
    ]  # fmt: skip


def _render(data: StudyData, frame: pd.DataFrame, analysis: Analysis, pictures) -> str:
    finished = frame[frame["finished"]]
    total = len(frame)
    counts = frame["state"].value_counts()
    others = ", ".join(f"{counts[s]} {s}" for s in (RunState.RUNNING, RunState.WAITING,
                                                     RunState.FAILED, RunState.DIVERGED,
                                                     RunState.PRUNED)
                       if counts.get(s))  # fmt: skip
    metric = analysis.metric
    configurations = _configurations(finished, metric)
    findings = analysis.findings
    verdicts = {v: sum(f.verdict == v for f in findings)
                for v in ("supported", "contradicted", "inconclusive")}  # fmt: skip
    spec = data.document.get("spec", {})
    fixed = [f for f in analysis.factors if f not in {e.factor for e in analysis.effects}]
    template = jinja2.Environment(
        loader=jinja2.FunctionLoader(
            lambda name: (resources.files("cnnsweep") / "report" / name).read_text()
        ),
        autoescape=True,
    ).get_template("page.html")
    return template.render(
        study=data.name,
        description=spec.get("description", ""),
        protocol=str(frame["config_protocol"].iloc[0]),
        generated=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        finished=len(finished),
        total=total,
        percent=round(100 * len(finished) / total),
        completeness=(
            # A pruned run is done too: the search decided it, and it will not run again.
            f"{round(100 * (len(finished) + counts.get(RunState.PRUNED, 0)) / total)}% done"
            + (f"; {others}" if others else "")
        ),
        metric=metric,
        metric_label=label(metric),
        higher_is_better=metric not in LOWER_IS_BETTER,
        best=configurations[0] if configurations else None,
        top=analysis.effects[0] if analysis.effects else None,
        effects=[_effect_row(e, analysis.comparisons) for e in analysis.effects],
        ranked_within=any("rank within" in e.term for e in analysis.effects),
        fixed=fixed,
        spread=seed_spread(frame, metric) if analysis.search is None else None,
        search=analysis.search,
        best_trials=_best_trials(analysis.search, metric),
        has_claims=bool(findings),
        verdicts=verdicts,
        findings=findings,
        comparisons=[_comparison_row(context, c) for context, c in analysis.comparisons],
        min_pairs=MIN_PAIRS,
        overfit_basis=_overfit_basis(finished),
        figures=pictures,
        configurations=configurations,
        runs=[_run_row(row) for _, row in frame.sort_values("index").iterrows()],
        spec=json.dumps(data.document, indent=2),
        environment=_environment(data.environments, data.document),
        precision_note=precision_note(frame, analysis.factors),
    )


def _best_trials(search: SearchSummary | None, metric: str) -> list[dict]:
    if search is None:
        return []
    return [
        {"label": row["label"], "value": _fmt(float(row[metric])),
         "epochs": _fmt(row["epochs_trained"], 0), "stop": row["stop_reason"]}
        for _, row in search.best.iterrows()
    ]  # fmt: skip


def _overfit_basis(finished: pd.DataFrame) -> str:
    legacy = int((finished["overfit_basis"] == "in-training").sum())
    if not legacy:
        return ""
    return (f"{legacy} run{'s' if legacy != 1 else ''} stored before cnnsweep measured the "
            "eval-mode training accuracy: their overfitting gap uses the in-training accuracy, "
            "which understates a dropout run's gap.")  # fmt: skip
