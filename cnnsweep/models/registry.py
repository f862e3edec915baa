"""The model registry: ``create_model(name, **options)``, in the manner of timm.

Every family takes the data's shape (``in_channels``, ``num_classes``, ``image_size``) plus its own
options; an option left unset means the family's own default.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from cnnsweep.errors import ConfigError

ModelFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    def decorator(factory: ModelFactory) -> ModelFactory:
        _REGISTRY[name] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **options) -> nn.Module:
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
