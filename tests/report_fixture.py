"""A stored study with synthetic results the tests control: 3 seeds per configuration, one failed
run, one diverged run, two runs still waiting. Effects are planted so that the findings have
known answers (batch norm or dropout wins; batch 64 is faster; 90/10 stops later)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnsweep.runner import run_dicts
from cnnsweep.spec import Study, parse_spec
from cnnsweep.store import Store, this_worker

SPEC = """
name = "{name}"
description = "A synthetic study for the report tests."
protocol = "holdout"
claims = "seed-report"
seeds = [0, 1, 2]

[fixed]
width = 0.25
max_epochs = 12

[grid]
optimizer = ["adam", "sgd"]
lr = { by = "optimizer", adam = [0.001, 0.0001], sgd = [0.01, 0.001] }
batch_size = [32, 64]
split = [0.7, 0.9]
regularization = [{ batch_norm = true, dropout = false }, { batch_norm = false, dropout = true }]
"""
FAILED_INDEX, DIVERGED_INDEX, WAITING = 5, 9, (94, 95)  # run positions (0-based)


def synthetic_result(config: dict, rng: np.random.Generator) -> dict:
    accuracy = 55 + (8.0 if config["batch_norm"] else 0) + rng.normal(0, 1.0)
    accuracy += 2.0 if config["optimizer"] == "adam" else 0
    epochs = 9 if config["split"] == 0.9 else 6
    train_acc = accuracy + (25 if config["dropout"] else 5)
    history = [
        {"epoch": e, "train_loss": 2.0 / e, "train_accuracy": train_acc * e / epochs,
         "val_loss": 2.2 / e, "val_accuracy": accuracy * e / epochs, "epoch_time": 1.0,
         "images_per_second": 500.0}
        for e in range(1, epochs + 1)
    ]  # fmt: skip
    return {
        "stop_reason": "patience", "epochs_trained": epochs, "best_epoch": epochs - 2,
        "train_loss": 0.5, "train_accuracy": train_acc, "best_train_accuracy": train_acc,
        "val_loss": 1.0, "val_accuracy": accuracy, "test_loss": 1.1, "test_accuracy": accuracy,
        "train_time": (12.0 if config["batch_size"] == 32 else 7.0) + rng.normal(0, 0.2),
        "images_per_second": 500.0, "train_size": 900, "val_size": 100, "test_size": 1000,
        "device": "cpu", "precision": "fp32", "normalization": "train", "history": history,
    }  # fmt: skip


PLANTED_TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "cnnsweep/train.py", line 160, in _train_epoch\n    loss.backward()\n'
    "RuntimeError: out of memory (planted)\n"
)


def make_fixture_study(folder: Path, name: str = "fixture") -> Store:
    study = Study(parse_spec(SPEC.replace("{name}", name), "fixture"), None)
    store = Store.open_or_create(str(folder / "journal.log"), study.name)
    store.set_document(study.document())
    runs = run_dicts(study)
    store.enqueue_missing(runs)
    rng = np.random.default_rng(0)
    worker = this_worker()
    for index in range(len(runs) - len(WAITING)):
        claim = store.claim(worker)
        environment = {"torch": "2.13.0", "device": "cpu", "device_name": "test cpu",
                       "host": "testhost"}  # fmt: skip
        store.set_environment(claim.trial_id, environment)
        if index == FAILED_INDEX:
            store.fail(claim.trial_id, "RuntimeError: out of memory (planted)",
                       traceback=PLANTED_TRACEBACK)  # fmt: skip
            continue
        result = synthetic_result(claim.config, rng)
        if index == DIVERGED_INDEX:
            result |= {"stop_reason": "diverged", "test_accuracy": 10.0, "train_loss": float("nan")}
        for epoch in result["history"]:
            store.record_epoch(claim.trial_id, epoch, epoch["val_accuracy"])
        store.finish(claim.trial_id, result, diverged=index == DIVERGED_INDEX)
    return store
