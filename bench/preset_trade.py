"""A preset's trade, measured: what lighter settings save in time and cost in accuracy.

Trains the study's batch norm + Adam (lr 1e-3) runs -- in seed48, batch 32 and 64 x splits 70/30
and 90/10 -- at a preset, as it is and with each variant's overrides, over seeds, and prints each
variant's test accuracies and training seconds. ``--no-amp`` trains in fp32, as a CPU without
native bf16 does. README ("A lighter CPU preset?") holds the figures it gave.

    python bench/preset_trade.py --seeds 0,1 --no-amp \\
        --variant "" --variant width=0.125,max_train_images=8000,max_epochs=4
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import tomllib
from pathlib import Path

import torch
from pydantic import ValidationError

from cnnsweep.config import TrainConfig
from cnnsweep.data import load_data
from cnnsweep.spec import load_study
from cnnsweep.train import train

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/cifar10-jpeg.tar.xz"


def parse_variant(text: str) -> dict:
    """``width=0.125,max_epochs=4`` -> {"width": 0.125, "max_epochs": 4} (values read as TOML);
    an empty text is the preset as it is."""
    overrides = {}
    for item in filter(None, text.split(",")):
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"preset_trade: variant item {item!r} is not NAME=VALUE")
        try:
            overrides[name.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            raise SystemExit(f"preset_trade: variant item {item!r}: not a TOML value") from None
    return overrides


def measured_configs(study: str, preset: str) -> list[TrainConfig]:
    """The study's batch norm + Adam runs at lr 1e-3, the configuration the report found best."""
    return [
        run.config for run in load_study(study, preset).runs()
        if run.config.batch_norm and run.config.optimizer == "adam" and run.config.lr == 1e-3
    ]  # fmt: skip


def varied(config: TrainConfig, overrides: dict, **more) -> TrainConfig:
    """``config`` with the overrides, validated as a stored config is: a misspelt or
    out-of-range setting is refused (pydantic's ValidationError)."""
    return TrainConfig(**{**config.model_dump(), **overrides, **more})


def measure(configs: list[TrainConfig], overrides: dict, seeds: list[int], amp: bool,
            data) -> dict:  # fmt: skip
    accuracies, epochs, seconds = [], [], 0.0
    for config in configs:
        for seed in seeds:
            start = time.perf_counter()
            result = train(varied(config, overrides, seed=seed, amp=amp), data, "cpu")
            seconds += time.perf_counter() - start
            accuracies.append(round(result.test_accuracy, 2))
            epochs.append(result.epochs_trained)
    return {
        "overrides": overrides, "test_accuracy": accuracies, "epochs_trained": epochs,
        "mean": round(statistics.mean(accuracies), 2), "min": min(accuracies),
        "max": max(accuracies), "train_seconds": round(seconds, 1),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--study", default="seed48")
    parser.add_argument("--preset", default="quick")
    parser.add_argument(
        "--variant", action="append", help='NAME=VALUE,...; "" is the preset as is (repeatable)'
    )
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="train in fp32")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (a worker's)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _measure_variants(args, parser)
    finally:  # given back: main() may run in a process with other work (the tests)
        torch.set_num_threads(before)


def _measure_variants(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[dict]:
    seeds = [int(seed) for seed in args.seeds.split(",")]
    configs = measured_configs(args.study, args.preset)
    variants = [(text, parse_variant(text)) for text in args.variant or [""]]
    for text, overrides in variants:  # every variant checked before hours of training start
        try:
            varied(configs[0], overrides)
        except ValidationError as exc:
            error = exc.errors()[0]
            parser.error(f"variant {text!r}: {error['loc'][0]}: {error['msg']}")
    data = load_data(args.data, progress=False)
    rows = []
    for text, overrides in variants:
        row = measure(configs, overrides, seeds, args.amp, data)
        rows.append(row)
        label = text or f"{args.preset} as it is"
        print(f"{label}: test accuracy {row['min']:.2f}-{row['max']:.2f}% (mean {row['mean']:.2f},"
              f" {len(row['test_accuracy'])} runs), {row['train_seconds']:.1f} s of training",
              flush=True)  # fmt: skip
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
