"""Gathering a study: from the store's records to the results frame (one row per run, finished
or not, the report's CSV columns first) and the per-epoch history frame.

This is the store's side of the line: everything downstream (export, the report's figures and
statistics) reads these frames, never the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from cnnsweep.errors import CnnsweepError
from cnnsweep.results import REPORT_COLUMNS, report_row
from cnnsweep.schema import RunState, level_label

if TYPE_CHECKING:
    from cnnsweep.store import RunRecord, Store

RESULT_COLUMNS = (
    "stop_reason", "epochs_trained", "best_epoch", "train_eval_accuracy", "train_accuracy",
    "train_loss",
    "val_accuracy", "val_loss", "test_loss", "images_per_second", "train_size", "val_size",
    "test_size", "precision", "normalization", "device", "resumed_after_epoch",
)  # fmt: skip
CONFIG_COLUMNS = (
    "model", "width", "protocol", "augment", "max_epochs", "monitor", "patience", "min_delta",
    "max_train_images", "max_test_images", "normalization", "amp",
)  # fmt: skip


def results_frame(records: list[RunRecord]) -> pd.DataFrame:
    rows = []
    for record in records:
        result = record.result or {}
        config = record.config
        row = report_row(config, result)
        row.update(
            run_id=record.run_id,
            index=record.index,
            label=record.label,
            seed=config["seed"],
            fold=config.get("fold") if config.get("protocol") == "kfold" else None,
            state=record.state,
            attempts=record.attempts,
        )
        row.update({f"factor_{k}": str(level_label(v)) for k, v in record.factors.items()})
        row.update({k: result.get(k) for k in RESULT_COLUMNS})
        row.update({f"config_{k}": config.get(k) for k in CONFIG_COLUMNS})
        env = record.environment or {}
        row.update(
            host=env.get("host"),
            torch=env.get("torch"),
            git_commit=env.get("git_commit"),
            error=record.error if record.state == RunState.FAILED else None,
            traceback=record.traceback if record.state == RunState.FAILED else None,
            started_at=_time(record.started_at),
            ended_at=_time(record.ended_at),
        )
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=[*REPORT_COLUMNS, "run_id", "state"])
    return frame


def _time(seconds: float | None):
    return pd.Timestamp(seconds, unit="s", tz="UTC") if seconds is not None else None


def check_output_file(output: str) -> Path:
    """A path that names a file to write: not empty, not a folder, in a folder that exists or
    can be made."""
    path = Path(output)
    if not output.strip() or not path.name or path.name in (".", ".."):
        raise CnnsweepError(f"invalid output file {output!r}: name a file, e.g. results.csv")
    if path.is_dir():
        raise CnnsweepError(f"invalid output file {output!r}: it is a folder; name a file in it")
    if path.exists() and not path.is_file():
        raise CnnsweepError(f"invalid output file {output!r}: not a regular file")
    return path


TABLE_FORMATS = ("csv", "parquet")


def table_format(output: str, given: str | None) -> str:
    """The format to write ``output`` in: ``given`` (``--format``), else its suffix's. A file
    named for one format is never written in the other (``x.parquet`` holding CSV), and a
    suffix that names neither needs ``--format``."""
    suffix = Path(output).suffix.lower().lstrip(".")
    if given is None:
        if suffix not in TABLE_FORMATS:
            raise CnnsweepError(
                f"cannot tell the format of {output!r} by its name: name a .csv or .parquet "
                "file, or give --format csv|parquet"
            )
        return suffix
    if suffix in TABLE_FORMATS and suffix != given:
        raise CnnsweepError(f"--format {given} but the file {output!r} is named .{suffix}")
    return given


def write_table(frame: pd.DataFrame, path: Path, fmt: str) -> Path:
    """Write CSV or Parquet atomically (a temporary file renamed into place)."""
    if fmt not in TABLE_FORMATS:
        raise CnnsweepError(f"unknown format {fmt!r}; valid formats: {', '.join(TABLE_FORMATS)}")
    path = check_output_file(str(path))
    staging = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            frame.to_csv(staging, index=False)
        else:
            frame.to_parquet(staging, index=False)
        staging.replace(path)
    except OSError as exc:
        staging.unlink(missing_ok=True)
        raise CnnsweepError(f"cannot write {path}: {exc.strerror}") from None
    return path


HISTORY_COLUMNS = (
    "train_loss", "train_accuracy", "val_loss", "val_accuracy", "train_eval_loss",
    "train_eval_accuracy", "epoch_time",
)  # fmt: skip


def history_frame(records: list[RunRecord]) -> pd.DataFrame:
    """Per-epoch metrics of every run that recorded any, long format (one row per epoch)."""
    rows = [
        {"run_id": record.run_id, "epoch": epoch["epoch"],
         **{k: epoch.get(k) for k in HISTORY_COLUMNS}}
        for record in records
        for epoch in record.history
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["run_id", "epoch", *HISTORY_COLUMNS])


@dataclass
class StudyData:
    """Everything the report reads: the results frame, the per-epoch history, the stored spec
    document and the workers' environments."""

    name: str
    results: pd.DataFrame
    history: pd.DataFrame
    document: dict
    environments: list[dict]


def study_data(store: Store, records: list[RunRecord] | None = None) -> StudyData:
    """Gather a stored study for the report (from ``records`` when already read)."""
    records = store.records() if records is None else records
    if not records:
        raise CnnsweepError(f"study {store.study_name!r} has no runs to report")
    return StudyData(
        name=store.study_name,
        results=results_frame(records),
        history=history_frame(records),
        document=store.document() or {},
        environments=[r.environment for r in records if r.environment],
    )
