"""Models: a registry and one module per family. Importing this package registers them all."""

from cnnsweep.models import alexnet  # noqa: F401  (registers "alexnet")
from cnnsweep.models.registry import build_model, create_model, list_models, register_model

__all__ = ["build_model", "create_model", "list_models", "register_model"]
