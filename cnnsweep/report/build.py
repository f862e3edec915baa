"""``cnnsweep report``: a stored study -> ``report.html`` (self-contained), the figures as PNG
files, and ``results.csv``. Everything is written to a staging folder first and moved into place
at the end, report.html last, so a failure leaves no half-written report behind."""

from __future__ import annotations

import base64
import datetime
import io
import json
import math
import platform
import shutil
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2
import matplotlib.pyplot as plt
import optuna
import pandas as pd

from cnnsweep import __version__
from cnnsweep.errors import CnnsweepError
from cnnsweep.frame import history_frame, results_frame, write_table
from cnnsweep.report.figures import all_figures
from cnnsweep.report.findings import judge_claims, load_claims
from cnnsweep.report.stats import (
    MIN_PAIRS,
    Comparison,
    configuration_summary,
    factor_comparisons,
)
from cnnsweep.report.tidy import tidy_frame
from cnnsweep.schema import RunState
from cnnsweep.store import Store


@dataclass
class ReportFiles:
    html: Path
    csv: Path
    figures: list[Path]


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _interval(low: float, high: float) -> str:
    return "" if math.isnan(low) else f"[{low:.2f}, {high:.2f}]"


def _png(figure) -> tuple[bytes, int, int]:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    width, height = (int(v) for v in figure.get_size_inches() * figure.dpi)
    plt.close(figure)
    return buffer.getvalue(), width, height


@dataclass
class StudyData:
    """Everything the report reads: the results frame, the per-epoch history, the stored spec
    document and the workers' environments. Built from a store by :func:`study_data`."""

    name: str
    results: pd.DataFrame
    history: pd.DataFrame
    document: dict
    environments: list[dict]


def study_data(store: Store) -> StudyData:
    records = store.records()
    if not records:
        raise CnnsweepError(f"study {store.study_name!r} has no runs to report")
    return StudyData(
        name=store.study_name,
        results=results_frame(records),
        history=history_frame(records),
        document=store.document() or {},
        environments=[r.environment for r in records if r.environment],
    )


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


def build_report(data: StudyData, out_dir: Path, claims_path: str | None = None) -> ReportFiles:
    claims = load_claims(claims_path)  # a bad claims file fails before anything is written
    spec = data.document.get("spec", {})
    results = data.results
    factors = list(spec.get("grid", {})) or [
        c.removeprefix("factor_") for c in results.columns if c.startswith("factor_")
    ]
    frame = tidy_frame(results, factors)
    protocol = str(frame["config_protocol"].iloc[0])
    curve_metric = "train_accuracy" if protocol == "seed" else "val_accuracy"
    findings = judge_claims(claims, frame, factors)
    parents = {name: axis["by"] for name, axis in spec.get("grid", {}).items()
               if isinstance(axis, dict) and "by" in axis}  # fmt: skip
    comparisons = factor_comparisons(frame[frame["finished"]], factors, "test_accuracy", parents)
    # With no finished run there is nothing to draw (and matplotlib would only warn).
    figures = all_figures(frame, data.history, curve_metric) if frame["finished"].any() else []

    staging = _staging_folder(out_dir)
    try:
        pictures = []
        for fig in figures:
            png, width, height = _png(fig.figure)
            (staging / f"{fig.key}.png").write_bytes(png)
            pictures.append({"key": fig.key, "title": fig.title, "caption": fig.caption,
                             "data": base64.b64encode(png).decode(), "width": width,
                             "height": height})  # fmt: skip
        write_table(results, staging / "results.csv", "csv")
        html = _render(data, frame, findings, comparisons, pictures, protocol)
        (staging / "report.html").write_text(html, encoding="utf-8")
        moved = [_move(staging / f"{fig['key']}.png", out_dir) for fig in pictures]
        csv = _move(staging / "results.csv", out_dir)
        page = _move(staging / "report.html", out_dir)  # last: its presence means complete
    except OSError as exc:
        raise CnnsweepError(f"cannot write the report to {out_dir}: {exc.strerror}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ReportFiles(page, csv, moved)


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
        "val_accuracy": _fmt(row["val_accuracy"]),
        "epochs_trained": _fmt(row["epochs_trained"], 0),
        "epochs_run": _fmt(row["epochs_run"], 0),
        "train_time": _fmt(row["train_time"], 1),
        "attempts": row["attempts"],
        "error": row["error"] if isinstance(row["error"], str) else "",
        "traceback": row.get("traceback") if isinstance(row.get("traceback"), str) else "",
    }  # fmt: skip


def _comparison_row(context: str, c: Comparison) -> dict:
    return {
        "factor": c.factor, "context": context, "a": c.a, "b": c.b, "pairs": c.pairs,
        "difference": f"{c.mean_difference:+.2f}",
        "difference_ci": _interval(*c.difference_ci),
        "p": f"{c.p_a_greater:.2f}", "p_ci": _interval(*c.p_ci),
        "wilcoxon": _fmt(c.wilcoxon_p, 3),
        "outcome": {"greater": f"{c.a} better", "less": f"{c.b} better"}.get(
            c.outcome, "not distinguishable"),
    }  # fmt: skip


def _render(
    data: StudyData, frame: pd.DataFrame, findings, comparisons, pictures, protocol: str
) -> str:
    finished = frame[frame["finished"]]
    total = len(frame)
    counts = frame["state"].value_counts()
    others = ", ".join(f"{counts[s]} {s}" for s in (RunState.RUNNING, RunState.WAITING,
                                                     RunState.FAILED, RunState.DIVERGED)
                       if counts.get(s))  # fmt: skip
    summary = configuration_summary(finished, "test_accuracy", ["configuration"])
    best = None
    if not summary.empty:
        top = summary.sort_values("mean", ascending=False).iloc[0]
        best = {"configuration": top["configuration"], "mean": top["mean"], "runs": top["runs"],
                "ci": _interval(top["ci_low"], top["ci_high"])}  # fmt: skip
    configurations = (
        [
            {
                "configuration": row.configuration,
                "runs": row.runs,
                "mean": row.mean,
                "ci": _interval(row.ci_low, row.ci_high),
            }
            for row in summary.sort_values("mean", ascending=False).itertuples()
        ]
        if not summary.empty
        else []
    )
    runs = [_run_row(row) for _, row in frame.sort_values("index").iterrows()]
    verdicts = {v: sum(f.verdict == v for f in findings)
                for v in ("supported", "contradicted", "inconclusive")}  # fmt: skip
    spec = data.document.get("spec", {})
    template = jinja2.Environment(
        loader=jinja2.FunctionLoader(
            lambda name: (resources.files("cnnsweep") / "report" / name).read_text()
        ),
        autoescape=True,
    ).get_template("page.html")
    return template.render(
        study=data.name,
        description=spec.get("description", ""),
        protocol=protocol,
        generated=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        finished=len(finished),
        total=total,
        percent=round(100 * len(finished) / total),
        completeness=(
            f"{round(100 * len(finished) / total)}% complete" + (f"; {others}" if others else "")
        ),
        best=best,
        verdicts=verdicts,
        findings=findings,
        comparisons=[_comparison_row(context, c) for context, c in comparisons],
        min_pairs=MIN_PAIRS,
        figures=pictures,
        configurations=configurations,
        runs=runs,
        spec=json.dumps(data.document, indent=2),
        environment=_environment(data.environments, data.document),
    )
