"""Transfer strategies as small objects with hooks and state, their registry, and ``auto``.

Importing the package registers the built-in strategies.
"""

from . import builtin  # noqa: F401  (registers feature-extraction, partial, full, gradual)
from .auto import AutoDecision, choose_auto, knn_probe_accuracy
from .base import Strategy, get_strategy, list_strategies, register_strategy, strategy_class, unregister_strategy
from .builtin import FeatureExtraction, FullFineTuning, PartialFineTuning

__all__ = [
    "AutoDecision", "FeatureExtraction", "FullFineTuning", "PartialFineTuning", "Strategy", "choose_auto", "get_strategy",
    "knn_probe_accuracy", "list_strategies", "register_strategy", "strategy_class", "unregister_strategy",
]
