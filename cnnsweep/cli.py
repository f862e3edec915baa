"""The ``cnnsweep`` command line. Thin: it parses, calls the library, and prints.

Every user-facing problem surfaces as one line ``cnnsweep: error: ...`` and exit status 2; a
store that cannot be reached mid-command, as one such line and exit status 1.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
import types
import typing
from collections.abc import Callable, Sequence

import cnnsweep
from cnnsweep import __version__
from cnnsweep.errors import CnnsweepError, first_line, unreachable
from cnnsweep.interrupts import Terminated, sigterm_stops_as_ctrl_c

EXIT_USAGE = 2
EXIT_STORE_LOST = 1  # not the input's fault: the same command may succeed later
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM, as a shell reports


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line (no usage block) like every other error here."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"cnnsweep: error: {message}\n")


def _option_type(annotation) -> tuple[type, list | None]:
    """(argparse type, choices) of a TrainConfig field's annotation; ``X | None`` reads as X,
    and ``bool | Literal[...]`` as a flag that may also take one of the literal's values."""
    if typing.get_origin(annotation) is typing.Literal:
        return str, list(typing.get_args(annotation))
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        options = [_option_type(a) for a in typing.get_args(annotation) if a is not type(None)]
        choices = [c for _, cs in options for c in cs or ()]
        return options[0][0], choices or None
    return annotation, None


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field, generated from its type and description: the settings
    are declared once. Every default here is None (unset), so TrainConfig's defaults, and the
    protocol's, apply to whatever the command line leaves out."""
    from cnnsweep.config import TrainConfig

    group = parser.add_argument_group("training settings (as in a study spec's [fixed])")
    _add_setting_options(group, list(TrainConfig.model_fields))
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto)")


def _add_setting_options(group, names: list[str]) -> None:
    """An option for each named TrainConfig field, unset (None) unless given."""
    from cnnsweep.config import PROTOCOL_DEFAULTS, TrainConfig

    for name in names:
        field = TrainConfig.model_fields[name]
        flag = "--" + name.replace("_", "-")
        default = field.default
        if default is None and any(name in d for d in PROTOCOL_DEFAULTS.values()):
            default = ", ".join(f"{p}: {d[name]}" for p, d in PROTOCOL_DEFAULTS.items())
        help_text = f"{field.description} (default: {default})"
        kind, choices = _option_type(field.annotation)
        if kind is bool and choices:  # --augment (its last, fullest choice), or --augment flip
            group.add_argument(flag, nargs="?", const=choices[-1], choices=choices,
                               default=None, metavar="|".join(choices),
                               help=help_text)  # fmt: skip
        elif kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)  # fmt: skip
        else:
            group.add_argument(flag, type=kind, choices=choices, default=None,
                               metavar=kind.__name__.upper() if not choices else None,
                               help=help_text)  # fmt: skip


def _speed_names() -> list[str]:
    """The speed switches (identity.SPEED_SETTINGS), in TrainConfig's order."""
    from cnnsweep.config import TrainConfig
    from cnnsweep.identity import SPEED_SETTINGS

    return [name for name in TrainConfig.model_fields if name in SPEED_SETTINGS]


def _speed_settings(args: argparse.Namespace) -> dict:
    """The speed switches given on the command line, checked together (compile and cuda_graph
    exclude each other)."""
    from cnnsweep.config import make_config

    speed = {name: getattr(args, name) for name in _speed_names()}
    speed = {name: value for name, value in speed.items() if value is not None}
    make_config(**speed)
    return speed


def _config_settings(args: argparse.Namespace) -> dict:
    """The training settings given on the command line (the rest stay unset)."""
    from cnnsweep.config import TrainConfig

    given = {name: getattr(args, name) for name in TrainConfig.model_fields}
    return {name: value for name, value in given.items() if value is not None}


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cnnsweep.config import make_config
    from cnnsweep.data import load_data
    from cnnsweep.data.cache import save_cached
    from cnnsweep.devices import resolve_device
    from cnnsweep.preflight import preflight
    from cnnsweep.train import train

    config = make_config(**_config_settings(args))  # fail fast, before any data is read
    device = resolve_device(args.device)
    data = load_data(args.data, save_cache=False)
    preflight(config, data, device)  # a run that cannot start leaves no cache entry behind
    save_cached(data)

    bar = tqdm(total=0, unit="batch", leave=False, file=sys.stderr, disable=args.quiet or None)

    def on_batch(done: int, total: int) -> None:
        if done == 1:
            bar.reset(total=total)
        bar.update(1)

    def on_epoch(m) -> None:
        val = f" val_loss={m.val_loss:.4f} val_acc={m.val_accuracy:.2f}" if m.val_loss else ""
        line = (
            f"epoch {m.epoch}/{config.max_epochs} loss={m.train_loss:.4f} "
            f"acc={m.train_accuracy:.2f}{val} {m.images_per_second:.0f} img/s"
        )
        if not args.quiet:
            bar.write(line, file=sys.stderr)

    bar.set_description("train")
    try:
        result = train(config, data, device, on_epoch=on_epoch, on_batch=on_batch)
    finally:
        bar.close()
    print(result.model_dump_json(indent=2))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from cnnsweep.data import load_data

    data = load_data(args.data)
    summary = {
        "source": data.source,
        "fingerprint": data.fingerprint,
        "classes": list(data.classes),
        "channels": data.channels,
        "image_size": list(data.image_size),
        "train_images": len(data.train_labels),
        "test_images": len(data.test_labels),
    }
    print(json.dumps(summary, indent=2))
    return 0


def _study_from_args(args: argparse.Namespace):
    from cnnsweep.spec import MAX_RUNS, load_study

    return load_study(args.spec, args.preset, getattr(args, "max_runs", None) or MAX_RUNS)


def _study_name(args: argparse.Namespace) -> str:
    from cnnsweep.spec import check_name

    if getattr(args, "study", None) is not None:
        return check_name(args.study, "study name")
    if getattr(args, "spec", None):
        return _study_from_args(args).name
    raise CnnsweepError("name the study: give a SPEC or --study NAME")


def cmd_run(args: argparse.Namespace) -> int:
    with sigterm_stops_as_ctrl_c():  # runs in flight go back to the queue, as on a Ctrl-C
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from cnnsweep.launch import start_worker_server, surely_cpus

    if args.max_runs is not None and args.max_runs < 1:
        raise CnnsweepError(f"invalid --max-runs {args.max_runs}: must be at least 1")
    study = _study_from_args(args)  # a bad spec is refused before any process starts
    if not args.dry_run and surely_cpus(args.devices.split(",")):
        start_worker_server(["cpu"])  # the workers' imports, beside this command's own
    from cnnsweep.runner import check_placement, run_study, stored_identity_version
    from cnnsweep.schema import RunState
    from cnnsweep.worker import WorkerOptions

    if args.runs_per_device is not None and args.workers is not None:
        raise CnnsweepError("give --workers or --runs-per-device, not both")
    workers = 1 if args.workers is None else args.workers
    # Every option checked before a dry run too: it shows what the same command would do.
    check_placement(workers, args.runs_per_device, args.devices.split(","))
    options = WorkerOptions(
        store_url=args.store, study_name=study.name, max_attempts=args.max_attempts,
        heartbeat_interval=args.heartbeat, grace=args.grace, checkpoints=args.checkpoints,
        checkpoint_every=args.checkpoint_every, speed=_speed_settings(args),
    )  # fmt: skip
    if args.dry_run:
        runs = study.runs(stored_identity_version(study, args.store))
        for run in runs:
            print(f"{run.index + 1:4d}  {run.run_id}  {run.label}")
        print(f"{len(runs)} runs in study {study.name!r}", file=sys.stderr)
        if (estimate := _dry_run_estimate(study, args, workers)) is not None:
            _show_estimate(estimate, study, assume_yes=True)
        return 0
    try:
        summary = run_study(
            study, store_url=args.store, workers=workers,
            runs_per_device=args.runs_per_device, devices=args.devices.split(","),
            data=args.data, allow_spec_change=args.allow_spec_change, options=options,
            report=not args.no_report,
            before_start=lambda estimate: _show_estimate(estimate, study, args.yes),
        )  # fmt: skip
    except NotStarted:
        print("cnnsweep: not started; nothing was stored", file=sys.stderr)
        return 1
    counts = ", ".join(f"{k}: {v}" for k, v in summary.counts.items())
    print(f"study {summary.study} ({summary.store}): {counts}; results in {summary.csv}")
    for line in summary.findings:
        print(line)
    if summary.report:
        print(f"report: {summary.report}")
    else:
        later = f"cnnsweep report --study {summary.study} -o runs/{summary.study}/report"
        later += " --store URL" if args.store else ""  # never echo a password
        print(f"report: not written (--no-report); `{later}` writes it")
    unfinished = sum(n for state, n in summary.counts.items() if RunState(state).pending)
    if unfinished:  # its workers kept dying, and the command gave up replacing them
        print(f"cnnsweep: {unfinished} runs not finished: their workers kept failing (above); "
              "run the same command again", file=sys.stderr)  # fmt: skip
    return 1 if unfinished or summary.counts.get(RunState.FAILED) else 0


class NotStarted(Exception):
    """The user declined a long study at the estimate's question."""


ASK_ABOVE_S = 3600.0  # an interactive `cnnsweep run` asks before a study longer than this


def _dry_run_estimate(study, args: argparse.Namespace, workers: int):
    """The estimate without running anything (None, said so, when it needs a download)."""
    from cnnsweep.data import load_data
    from cnnsweep.data.loading import cifar10_is_cached
    from cnnsweep.devices import resolve_device
    from cnnsweep.runner import existing_store, parse_runs_per_device, study_estimate

    source = args.data or study.spec.data
    if source is None and not cifar10_is_cached():
        print("estimate: needs the data; give --data PATH, or run once (CIFAR-10 is downloaded "
              "then)", file=sys.stderr)  # fmt: skip
        return None
    devices = [resolve_device(d) for d in args.devices.split(",")]
    stored = existing_store(study, args.store)  # an unreachable store: refused before the data
    data = load_data(source, progress=False)
    if args.runs_per_device is not None:  # as `cnnsweep run` would start them
        workers = parse_runs_per_device(args.runs_per_device, study, data, devices) * len(devices)
    return study_estimate(study, stored, data, devices, workers)


def _show_estimate(estimate, study, assume_yes: bool) -> None:
    """Print the estimate; on a CPU past an hour, name the faster options; at a terminal, past
    ASK_ABOVE_S, ask once (``--yes`` and a non-interactive run never ask)."""
    import torch

    from cnnsweep.estimate import duration

    for line in estimate.lines():
        print(line, file=sys.stderr)
    if estimate.long_on_cpu:
        faster = [f"--preset {name}" for name in study.spec.presets if name != study.preset]
        gpu = "--devices cuda:0" + ("" if torch.cuda.is_available() else " on a GPU machine")
        print(f"cnnsweep: this is over an hour on this CPU (up to "
              f"{duration(estimate.seconds[1])}); faster: " + ", ".join([*faster, gpu]),
              file=sys.stderr)  # fmt: skip
    # No standard input at all (a closed descriptor: sys.stdin is None) is not a terminal either.
    interactive = all(stream is not None and stream.isatty() for stream in (sys.stdin, sys.stderr))
    if assume_yes or not interactive or estimate.seconds[1] <= ASK_ABOVE_S:
        return
    print("start it? [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise NotStarted


def cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from cnnsweep.worker import WorkerOptions, run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    options = WorkerOptions(
        store_url=args.store, study_name=args.study, device=args.device, data=args.data,
        max_attempts=args.max_attempts, heartbeat_interval=args.heartbeat, grace=args.grace,
        checkpoints=args.checkpoints, checkpoint_every=args.checkpoint_every,
        speed=_speed_settings(args),
    )  # fmt: skip
    done = run_worker(options)
    print(f"worker finished: {done} runs done; nothing left to claim in {args.study!r}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from cnnsweep.progress import status_document, status_text
    from cnnsweep.store import Store

    if args.watch is not None:
        if args.json:
            raise CnnsweepError("give --watch or --json, not both")
        if not (math.isfinite(args.watch) and args.watch >= MIN_WATCH_S):
            raise CnnsweepError(f"invalid --watch {args.watch:g}: seconds, at least {MIN_WATCH_S}")
    store = Store.open(args.store, _study_name(args))
    if args.watch is not None:
        _watch(store, args.watch)
    records = store.records(epochs=False)
    data = store.data_signature()
    if args.json:
        document = {"study": store.study_name, "store": store.display_url, "data": data,
                    **status_document(records, now=store.now())}  # fmt: skip
        print(json.dumps(document, indent=2))
        return 0
    print(f"study {store.study_name} ({store.display_url})")
    if data is not None:
        shape = "x".join(str(n) for n in data["image_shape"])
        print(
            f"data: {data['train_images']:,} training and {data['test_images']:,} test images "
            f"({shape}, {len(data['classes'])} classes; sha256 {data['sha256'][:12]})"
        )
    print(status_text(records, now=store.now()))
    return 0


MIN_WATCH_S = 0.1  # --watch: the shortest pause between two reads of the store (seconds)


def _watch(store, interval: float) -> None:
    """Show the study as it goes (a live display at a terminal, else a line as each run starts,
    trains an epoch and ends) until nothing waits or runs; Ctrl-C stops watching, nothing else."""
    from cnnsweep.progress import StudyProgress
    from cnnsweep.store import patiently

    records = patiently(lambda: store.records(epochs=False), "reading the study")
    progress = StudyProgress(total=len(records), workers=1, stream=sys.stdout)
    try:
        while True:
            progress.workers = max(1, sum(r.state == "running" for r in records))
            progress.update(records)
            if not any(r.state.pending for r in records):
                return
            time.sleep(interval)
            records = patiently(lambda: store.records(epochs=False), "reading the study")
    finally:
        progress.close()


def cmd_export(args: argparse.Namespace) -> int:

    from cnnsweep.frame import check_output_file, results_frame, table_format, write_table
    from cnnsweep.store import Store

    output = check_output_file(args.output)  # before the store is even opened
    fmt = table_format(args.output, args.format)
    store = Store.open(args.store, _study_name(args))
    frame = results_frame(store.records())
    path = write_table(frame, output, fmt)
    print(f"{len(frame)} runs written to {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnsweep.frame import study_data
    from cnnsweep.report import build_report
    from cnnsweep.store import Store

    store = Store.open(args.store, _study_name(args))
    files = build_report(study_data(store), Path(args.output), args.claims)
    count = len(files.figures)
    print(f"report written to {files.html} ({count} figure{'' if count == 1 else 's'}, "
          f"{files.csv.name})")  # fmt: skip
    return 0


def cmd_studies(args: argparse.Namespace) -> int:
    from cnnsweep.spec import builtin_specs, load_study

    studies = [load_study(name) for name in builtin_specs()]
    presets = [", ".join(study.spec.presets) or "-" for study in studies]
    column = max(map(len, presets))  # the descriptions start in one column
    for name, study, names in zip(builtin_specs(), studies, presets, strict=True):
        print(f"{name:<16} {len(study.runs()):4d} runs  presets: {names:<{column}}  "
              f"{study.spec.description}")  # fmt: skip
    return 0


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="postgresql://USER@HOST/DB, or a journal file path "
                        "(default: runs/<study>/journal.log)")  # fmt: skip


def _add_study_ref(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", nargs="?", help="built-in study name or TOML file")
    parser.add_argument("--preset", help="a preset of the spec (e.g. cpu, quick, full)")
    parser.add_argument("--study", help="the stored study's name (instead of SPEC)")
    _add_store_options(parser)


def _add_worker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-attempts", type=int, default=3,
                        help="tries per run when workers are lost (default: 3)")  # fmt: skip
    parser.add_argument("--heartbeat", type=float, default=10.0,
                        help="seconds between heartbeats (default: 10)")  # fmt: skip
    parser.add_argument("--grace", type=float, default=120.0,
                        help="silent seconds before another worker takes a run over")  # fmt: skip
    parser.add_argument("--checkpoints", metavar="DIR",
                        help="folder for epoch checkpoints, so that a retried run resumes "
                        "(default: beside a journal store; none for PostgreSQL)")  # fmt: skip
    parser.add_argument(
        "--checkpoint-every",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="least seconds between two checkpoints of a run (default: 30)",
    )
    speed = parser.add_argument_group(
        "speed switches, for every run this command trains (not part of a run's identity: the "
        "same runs, trained faster; each result records what it used)"
    )
    _add_setting_options(speed, _speed_names())


def build_parser() -> argparse.ArgumentParser:
    # The package's own first line ("cnnsweep: controlled studies ..."), not this module's.
    parser = _Parser(prog="cnnsweep", description=cnnsweep.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cnnsweep {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train one configuration and print its result")
    train.add_argument(
        "--data",
        help="CIFAR-10 archive/folder or class-folder tree (default: "
        "download CIFAR-10 into the cache)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress output")
    _add_train_options(train)
    train.set_defaults(handler=cmd_train)

    run = commands.add_parser("run", help="run a study to completion (resumable)")
    run.add_argument("spec", help="built-in study name (see `cnnsweep studies`) or TOML file")
    run.add_argument("--preset", help="a preset of the spec (e.g. cpu, quick, full)")
    _add_store_options(run)
    run.add_argument("--workers", type=int, help="local worker processes (1)")
    run.add_argument("--runs-per-device", metavar="K|auto",
                     help="K worker processes on each device; auto: as many as fit in its "
                     "free memory (at most 8; on a CPU at most one per core)")  # fmt: skip
    run.add_argument("--devices", default="auto", help="cpu, or cuda:0,cuda:1 (round-robin)")
    run.add_argument("--data", help="data path (default: the spec's, else CIFAR-10)")
    run.add_argument("--dry-run", action="store_true", help="print the runs and stop")
    run.add_argument("--max-runs", type=int,
                     help="refuse a study with more runs than this (default: 100,000)")  # fmt: skip
    run.add_argument("--allow-spec-change", action="store_true",
                     help="run a changed spec under an existing study name")  # fmt: skip
    run.add_argument("--yes", action="store_true",
                     help="start without asking, however long the estimate")  # fmt: skip
    run.add_argument("--no-report", action="store_true",
                     help="write the results CSV but not the HTML report (`cnnsweep report` "
                     "writes it later)")  # fmt: skip
    _add_worker_options(run)
    run.set_defaults(handler=cmd_run)

    worker = commands.add_parser("worker", help="join a stored study from this machine")
    _add_store_options(worker)
    worker.add_argument("--study", required=True, help="the study's name")
    worker.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto)")
    worker.add_argument("--data", help="data path on this machine (default: the spec's)")
    _add_worker_options(worker)
    worker.set_defaults(handler=cmd_worker)

    status = commands.add_parser("status", help="counts by state, runs in flight, ETA")
    _add_study_ref(status)
    status.add_argument("--json", action="store_true",
                        help="one JSON object on standard output, for scripts")  # fmt: skip
    status.add_argument("--watch", type=float, nargs="?", const=2.0, metavar="SECONDS",
                        help="follow the study until nothing waits or runs (every 2 s unless "
                        "told), then print its status")  # fmt: skip
    status.set_defaults(handler=cmd_status)

    export = commands.add_parser("export", help="write the results table")
    _add_study_ref(export)
    export.add_argument("--format", choices=["csv", "parquet"],
                        help="csv or parquet (default: the output file's suffix)")  # fmt: skip
    export.add_argument("-o", "--output", required=True, help="file to write")
    export.set_defaults(handler=cmd_export)

    report = commands.add_parser("report", help="write the HTML report, figures and CSV")
    _add_study_ref(report)
    report.add_argument("-o", "--output", required=True, help="folder to write into")
    report.add_argument("--claims", help="claims to re-test: a TOML file, or a built-in set "
                        "(seed-report); default: the ones the study's spec names")  # fmt: skip
    report.set_defaults(handler=cmd_report)

    studies = commands.add_parser("studies", help="list the built-in study specs")
    studies.set_defaults(handler=cmd_studies)

    data = commands.add_parser("data", help="load (and cache) a data set and describe it")
    data.add_argument("data", nargs="?", help="data path (default: CIFAR-10, downloaded once)")
    data.set_defaults(handler=cmd_data)
    return parser


def entry() -> int:
    """The ``cnnsweep`` command."""
    code = main()
    # The interpreter's exit then skips a last collection of all that the command loaded and
    # left (about a second with torch, pandas and matplotlib loaded).
    gc.freeze()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error already printed
        return int(done.code or 0)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CnnsweepError as exc:
        print(f"cnnsweep: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as stop:
        hint = "; run the same command again to finish" if args.command == "run" else ""
        terminated = isinstance(stop, Terminated)  # a SIGTERM
        print(f"cnnsweep: {'terminated' if terminated else 'interrupted'}{hint}", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `cnnsweep run seed48 --dry-run | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (silence the flush at exit)
        return 0
    except Exception as exc:
        if not unreachable(exc):
            raise
        # The store lost for longer than a worker's patience, or as a command read it.
        print(f"cnnsweep: error: the store cannot be reached: {first_line(exc)}; what it holds "
              "is kept: run the command again once it is back", file=sys.stderr)  # fmt: skip
        return EXIT_STORE_LOST
