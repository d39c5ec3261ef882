"""distillkit: route what a small distilled model already knows to it; train it on the rest.

    from openai import OpenAI
    import distillkit

    client = distillkit.wrap(OpenAI())     # same client back; nothing else changes

Public API only; each name lives in the module that owns its concept.
"""

from distillkit.config import ENV, DistillConfig
from distillkit.distiller import Distiller, default_distiller, set_default_distiller
from distillkit.errors import (
    ConfigError,
    DistillkitError,
    EmbedderMismatchError,
    StoreBusyError,
    StoreError,
    StoreLockedError,
    TrainingError,
)
from distillkit.intercept import is_wrapped, unwrap, wrap
from distillkit.options import Options
from distillkit.routing.request import RouteInfo, route_info
from distillkit.scope import distilled, scope
from distillkit.serving import CompatibleServerProvider, LLMProvider, SameClientProvider

__version__ = "0.1.0"

__all__ = [
    "ENV",
    "CompatibleServerProvider",
    "ConfigError",
    "DistillConfig",
    "Distiller",
    "DistillkitError",
    "EmbedderMismatchError",
    "LLMProvider",
    "Options",
    "RouteInfo",
    "SameClientProvider",
    "StoreBusyError",
    "StoreError",
    "StoreLockedError",
    "TrainingError",
    "__version__",
    "default_distiller",
    "distilled",
    "is_wrapped",
    "route_info",
    "scope",
    "set_default_distiller",
    "unwrap",
    "wrap",
]
