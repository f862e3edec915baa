"""``TrainConfig``: every setting of one training run, validated, with protocol defaults resolved.

The resolved config (nothing left ``None``) is stored with every result, so a result always says
exactly how it was produced.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cnnsweep.errors import ConfigError, describe_validation_error

Optimizer = Literal["sgd", "rmsprop", "adam"]
Protocol = Literal["holdout", "seed", "kfold"]
Monitor = Literal["val_accuracy", "val_loss", "train_accuracy", "train_loss"]
Normalization = Literal["auto", "train", "report"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]
Augmentation = Literal["none", "flip", "crop+flip"]

# Seeds are bounded so that every consumer (torch, numpy, JSON stores) takes them as they are.
MAX_SEED = 2**32 - 1

# What each protocol does when a setting is left unset (DESIGN.md, "Two protocols").
PROTOCOL_DEFAULTS: dict[str, dict] = {
    # The report's script: stop when training accuracy has not improved for 2 epochs.
    "seed": {"monitor": "train_accuracy", "patience": 2, "restore_best": False},
    # Validation-based early stopping with the best weights restored before the test.
    "holdout": {"monitor": "val_accuracy", "patience": 5, "restore_best": True},
    # k-fold cross-validation: one fold validates (early stopping, best weights restored), the
    # others train; the official test set is scored once per fold.
    "kfold": {"monitor": "val_accuracy", "patience": 5, "restore_best": True},
}


class TrainConfig(BaseModel):
    # Non-finite numbers (inf, nan) are invalid everywhere: they would be stored as null.
    model_config = ConfigDict(extra="forbid", validate_assignment=False, allow_inf_nan=False)

    # Each description is also the command line's help for the setting (cli.py).
    # Model (options of the registry's factory).
    model: str = Field("alexnet", description="registered model name")
    batch_norm: bool = Field(False, description="batch norm after each convolution")
    dropout: bool = Field(False, description="dropout p=0.5 in the fully connected blocks")
    width: float = Field(1.0, gt=0, description="channel multiplier; 1.0 is the report's network")

    # Optimisation.
    optimizer: Optimizer = Field("adam", description="SGD (momentum 0.9), RMSprop or Adam")
    lr: float = Field(1e-3, gt=0, description="learning rate")
    batch_size: int = Field(64, ge=1, description="training images per step")
    max_epochs: int = Field(50, ge=1, description="epoch limit")

    # Data and protocol.
    protocol: Protocol = Field(
        "holdout",
        description="holdout: validation split, official test set; seed: the report's; "
        "kfold: each fold validates once",
    )
    split: float = Field(0.9, gt=0, lt=1, description="training fraction of the training images")
    folds: int = Field(5, ge=2, description="kfold: number of folds of the training images")
    fold: int = Field(0, ge=0, description="kfold: the fold that validates (a study runs each)")
    augment: bool | Augmentation = Field(
        False, description="on the device: none, flip, or crop+flip (4 px padding); true: crop+flip"
    )
    normalization: Normalization = Field(
        "auto", description="auto: the report's constants for seed on RGB data, else train"
    )
    max_train_images: int | None = Field(None, ge=2, description="class-balanced training subset")
    max_test_images: int | None = Field(None, ge=1, description="class-balanced test subset")

    # Early stopping; None means the protocol's default (PROTOCOL_DEFAULTS).
    monitor: Monitor | None = Field(None, description="metric early stopping watches")
    patience: int | None = Field(None, ge=1, description="epochs without improvement to stop")
    min_delta: float = Field(0.0, ge=0, description="smallest change that counts as improvement")
    restore_best: bool | None = Field(None, description="test the best epoch's weights")

    # Measurement: what is scored besides training, not what is trained (not in the run's id).
    train_eval_images: int = Field(
        5000, ge=0, description="training images scored in eval mode each epoch (0: none)"
    )

    # Speed switches (they do not change what is computed, only how fast and in which precision).
    amp: bool = Field(True, description="bf16 autocast where the hardware supports it")
    compile: bool = Field(False, description="torch.compile the training step (eval is eager)")
    compile_mode: CompileMode = Field(
        "default", description="torch.compile mode; reduce-overhead also captures CUDA graphs"
    )
    cuda_graph: bool = Field(
        False, description="capture the whole training step in one CUDA graph (CUDA only)"
    )
    eval_batch_size: int = Field(1024, ge=1, description="images per evaluation batch")

    seed: int = Field(0, ge=0, le=MAX_SEED, description="split, initialisation and batch order")

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from cnnsweep.models import list_models

        if name not in list_models():
            raise ValueError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
        return name

    @field_validator("augment", mode="before")
    @classmethod
    def _augment_as_stored(cls, augment):
        """ "none" and "crop+flip" are stored as false and true, the booleans they extend: a run
        that says augment = true (as cnnsweep 0.2 runs did) is the same run as "crop+flip"."""
        if isinstance(augment, str):
            if augment not in get_args(Augmentation):
                raise ValueError(
                    f"unknown augmentation {augment!r}; valid: {', '.join(get_args(Augmentation))}"
                    " (or true, false)"
                )
            return {"none": False, "crop+flip": True}.get(augment, augment)
        return augment

    @model_validator(mode="after")
    def _resolve_protocol_defaults(self) -> TrainConfig:
        defaults = PROTOCOL_DEFAULTS[self.protocol]
        for key, value in defaults.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.cuda_graph and self.compile:
            raise ValueError("cuda_graph and compile are two ways to graph the step; choose one")
        if self.fold >= self.folds:
            raise ValueError(f"fold {self.fold} does not exist: folds are 0 to {self.folds - 1}")
        if self.protocol == "seed" and self.monitor.startswith("val_"):
            raise ValueError(
                f"monitor {self.monitor!r} needs a validation set; protocol 'seed' has none"
            )
        return self

    @property
    def augmentation(self) -> Augmentation:
        """What is done to each training image: "none", "flip" or "crop+flip"."""
        return {False: "none", True: "crop+flip"}.get(self.augment, self.augment)

    @property
    def mode(self) -> Literal["max", "min"]:
        """Whether the monitored metric improves upwards (accuracy) or downwards (loss)."""
        return "max" if self.monitor.endswith("accuracy") else "min"


def with_speed(config: TrainConfig, speed: dict[str, Any]) -> TrainConfig:
    """``config`` with a command's speed switches applied (``cnnsweep run --cuda-graph``, say):
    validated anew, so that a switch that clashes with the run's own settings is one error."""
    if not speed:
        return config
    return make_config(**{**config.model_dump(), **speed})


def make_config(**settings) -> TrainConfig:
    """Build a TrainConfig, turning validation errors into a one-line ConfigError."""
    try:
        return TrainConfig(**settings)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
