"""A run's identity: what makes two runs the same run, in every release of cnnsweep.

A stored study is matched against its spec by ``run_id``: a run whose id is already stored is not
enqueued again. So the id must not move when cnnsweep itself changes — a new setting, a changed
default, a new speed switch — or an upgrade would train a finished study all over again.

The identity (version 1) is the settings *as the study states them* (protocol, ``[fixed]``, the
preset, the grid values), each in its validated form (``lr = 1e-3`` and ``lr = 0.001`` agree),
plus the seed, leaving out:
- speed switches, which change how fast a run goes but not what it computes (``SPEED_SETTINGS``),
  and measurement settings, which add scores but leave training alone (``MEASUREMENT_SETTINGS``);
- a stated value equal to the setting's *neutral* value (``NEUTRAL``): what the setting meant when
  nothing was stated, frozen here when the setting was added. So ``augment = false`` and silence
  are the same run, and a later release may change a default without moving any id.

``amp`` is part of the identity: it chooses bf16 autocast, a different numerical computation
(where the hardware has bf16), and a study may compare it as a grid axis.

Version 0 is cnnsweep 0.1.0's id: a hash of the whole resolved config, speed switches included.
Studies stored by 0.1.0 keep it (see ``identity_version`` in store.py); it is computed from the
same stated settings against 0.1.0's defaults, frozen below, so it too survives later releases.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

IDENTITY_VERSION = 1  # what new studies are stored with
KNOWN_VERSIONS = (0, 1)

# Settings that change only speed, never what is computed.
SPEED_SETTINGS = frozenset({"compile", "compile_mode", "cuda_graph", "eval_batch_size"})
# Settings that add measurements (scores of a training subset) without changing the training.
MEASUREMENT_SETTINGS = frozenset({"train_eval_images"})
OUTSIDE_IDENTITY = SPEED_SETTINGS | MEASUREMENT_SETTINGS

# Each setting's neutral value: what it meant when unstated, frozen when it was added. A setting
# added later adds itself here once, with the value that computes what was computed before it
# existed; never change an entry (tests/test_identity.py checks every TrainConfig field is here).
NEUTRAL: dict[str, Any] = {
    "model": "alexnet",
    "batch_norm": False,
    "dropout": False,
    "width": 1.0,
    "optimizer": "adam",
    "lr": 1e-3,
    "batch_size": 64,
    "max_epochs": 50,
    "protocol": "holdout",
    "split": 0.9,
    "augment": False,
    "normalization": "auto",
    "max_train_images": None,
    "max_test_images": None,
    "monitor": None,
    "patience": None,
    "min_delta": 0.0,
    "restore_best": None,
    "amp": True,
    # Added in 0.3.0 (k-fold): meaningless for other protocols, so any value computes the same.
    "folds": 5,
    "fold": 0,
}
# Settings whose unstated value is resolved from the protocol (cnnsweep 0.1.0's table, frozen).
PROTOCOL_NEUTRAL: dict[str, dict[str, Any]] = {
    "seed": {"monitor": "train_accuracy", "patience": 2, "restore_best": False},
    "holdout": {"monitor": "val_accuracy", "patience": 5, "restore_best": True},
    "kfold": {"monitor": "val_accuracy", "patience": 5, "restore_best": True},  # added in 0.3.0
}
# cnnsweep 0.1.0's resolved config, field by field, for version 0 ids: its computing settings
# (frozen: a setting added to NEUTRAL later must not enter 0.1.0's config) and speed switches.
_V0_FIELDS = (
    "model", "batch_norm", "dropout", "width", "optimizer", "lr", "batch_size", "max_epochs",
    "protocol", "split", "augment", "normalization", "max_train_images", "max_test_images",
    "monitor", "patience", "min_delta", "restore_best", "amp",
)  # fmt: skip
_V0_SPEED_DEFAULTS = {"compile": False, "eval_batch_size": 1024}


def _neutral(setting: str, protocol: str) -> Any:
    return PROTOCOL_NEUTRAL.get(protocol, {}).get(setting, NEUTRAL.get(setting))


def identity(stated: Mapping[str, Any], resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The version-1 identity of a run: its stated, non-neutral, computing settings and its seed.

    ``stated`` names the settings the study gave (values are ignored); ``resolved`` is the run's
    validated config as JSON values (``TrainConfig.model_dump(mode="json")``).
    """
    protocol = resolved["protocol"]
    settings = {
        key: resolved[key]
        for key in stated
        if key != "seed"
        and key not in OUTSIDE_IDENTITY
        and resolved[key] != _neutral(key, protocol)
    }
    return {**settings, "seed": resolved["seed"]}


def _v0_config(stated: Mapping[str, Any], resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The config cnnsweep 0.1.0 would have resolved and stored from the same stated settings."""
    protocol = resolved["protocol"]
    config = {key: _neutral(key, protocol) for key in _V0_FIELDS} | _V0_SPEED_DEFAULTS
    for key in stated:
        if key in config:
            config[key] = resolved[key]
        elif key not in OUTSIDE_IDENTITY and resolved[key] != _neutral(key, protocol):
            config[key] = resolved[key]  # a later setting: no 0.1.0 run ever had it
    config["seed"] = resolved["seed"]
    return config


def run_id(stated: Mapping[str, Any], resolved: Mapping[str, Any], version: int) -> str:
    """The run's id under identity ``version`` (16 hex digits)."""
    if version == 1:
        document: dict[str, Any] = {"v": 1, **identity(stated, resolved)}
    elif version == 0:
        document = _v0_config(stated, resolved)
    else:
        raise ValueError(f"unknown identity version {version}; known: {KNOWN_VERSIONS}")
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
