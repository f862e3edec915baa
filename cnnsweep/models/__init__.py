"""Models: a registry and one module per family, imported when a model of it is first built
(registry.FAMILIES), so that naming a model in a spec imports no torch."""

from cnnsweep.models.registry import build_model, create_model, list_models, register_model

__all__ = ["build_model", "create_model", "list_models", "register_model"]
