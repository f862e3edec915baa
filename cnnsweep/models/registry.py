"""The model registry: ``create_model(name, **options)``, in the manner of timm.

Every family takes the data's shape (``in_channels``, ``num_classes``, ``image_size``) plus its own
options; an option left unset means the family's own default.

The built-in families are known by name before they are imported (``FAMILIES``), so that a spec
can be validated without importing torch (``cnnsweep status seed48`` stays fast); a family's
module is imported, and registers itself, when a model of it is first built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from cnnsweep.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    ModelFactory = Callable[..., nn.Module]

# Built-in family name -> the module that registers it.
FAMILIES: dict[str, str] = {
    "alexnet": "cnnsweep.models.alexnet",
    "resnet18": "cnnsweep.models.resnet",
    "mobilenetv2": "cnnsweep.models.mobilenet",
}
_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    def decorator(factory: ModelFactory) -> ModelFactory:
        _REGISTRY[name] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    return sorted(FAMILIES.keys() | _REGISTRY.keys())


def create_model(name: str, **options) -> nn.Module:
    if name not in _REGISTRY and name in FAMILIES:
        importlib.import_module(FAMILIES[name])  # registers the family
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    try:
        return _REGISTRY[name](**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None


def build_model(config, data) -> nn.Module:
    """The model a run's config asks for, shaped for ``data`` (an ImageDataset)."""
    return create_model(
        config.model,
        num_classes=data.num_classes,
        in_channels=data.channels,
        image_size=data.image_size,
        batch_norm=config.batch_norm,
        dropout=config.dropout,
        width=config.width,
    )
