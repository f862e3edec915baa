"""``TrainConfig``: every setting of one training run, validated, with protocol defaults resolved.

The resolved config (nothing left ``None``) is stored with every result, so a result always says
exactly how it was produced.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cnnsweep.errors import ConfigError, describe_validation_error

Optimizer = Literal["sgd", "rmsprop", "adam"]
Protocol = Literal["holdout", "seed"]
Monitor = Literal["val_accuracy", "val_loss", "train_accuracy", "train_loss"]
Normalization = Literal["auto", "train", "report"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]

# Seeds are bounded so that every consumer (torch, numpy, JSON stores) takes them as they are.
MAX_SEED = 2**32 - 1

# What each protocol does when a setting is left unset (DESIGN.md, "Two protocols").
PROTOCOL_DEFAULTS: dict[str, dict] = {
    # The report's script: stop when training accuracy has not improved for 2 epochs.
    "seed": {"monitor": "train_accuracy", "patience": 2, "restore_best": False},
    # Validation-based early stopping with the best weights restored before the test.
    "holdout": {"monitor": "val_accuracy", "patience": 5, "restore_best": True},
}


class TrainConfig(BaseModel):
    # Non-finite numbers (inf, nan) are invalid everywhere: they would be stored as null.
    model_config = ConfigDict(extra="forbid", validate_assignment=False, allow_inf_nan=False)

    # Model (options of the registry's factory).
    model: str = "alexnet"
    batch_norm: bool = False
    dropout: bool = False
    width: float = Field(1.0, gt=0, description="channel multiplier; 1.0 is the report's network")

    # Optimisation.
    optimizer: Optimizer = "adam"
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    max_epochs: int = Field(50, ge=1)

    # Data and protocol.
    protocol: Protocol = "holdout"
    split: float = Field(0.9, gt=0, lt=1, description="training fraction of the training images")
    augment: bool = False  # random crop (4 px padding) + horizontal flip, on the device
    normalization: Normalization = "auto"  # auto: the report's constants for seed on RGB data
    max_train_images: int | None = Field(None, ge=2, description="class-balanced subset")
    max_test_images: int | None = Field(None, ge=1)

    # Early stopping; None means the protocol's default (PROTOCOL_DEFAULTS).
    monitor: Monitor | None = None
    patience: int | None = Field(None, ge=1)
    min_delta: float = Field(0.0, ge=0)
    restore_best: bool | None = None

    # Speed switches (they do not change what is computed, only how fast and in which precision).
    amp: bool = True  # bf16 autocast where the hardware supports it
    compile: bool = False  # torch.compile the training step (evaluation stays eager)
    # torch.compile's mode; "reduce-overhead" also captures CUDA graphs (fewer kernel launches).
    compile_mode: CompileMode = "default"
    eval_batch_size: int = Field(1024, ge=1)

    seed: int = Field(0, ge=0, le=MAX_SEED)

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from cnnsweep.models import list_models

        if name not in list_models():
            raise ValueError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
        return name

    @model_validator(mode="after")
    def _resolve_protocol_defaults(self) -> TrainConfig:
        defaults = PROTOCOL_DEFAULTS[self.protocol]
        for key, value in defaults.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.protocol == "seed" and self.monitor.startswith("val_"):
            raise ValueError(
                f"monitor {self.monitor!r} needs a validation set; protocol 'seed' has none"
            )
        return self

    @property
    def mode(self) -> Literal["max", "min"]:
        """Whether the monitored metric improves upwards (accuracy) or downwards (loss)."""
        return "max" if self.monitor.endswith("accuracy") else "min"


def make_config(**settings) -> TrainConfig:
    """Build a TrainConfig, turning validation errors into a one-line ConfigError."""
    try:
        return TrainConfig(**settings)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
