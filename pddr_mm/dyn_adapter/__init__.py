"""Dyn-Adapter (Zhang et al., ECCV 2024) for mmpretrain vision transformers: a frozen ViT with adapters,
heads at several depths and dynamic early exit. Importing it registers ``DynAdapterClassifier``,
``Adapter``, ``LoRA``, ``ExitHead`` (MODELS), ``ExitMetric`` (METRICS) and ``ExitLossWeightHook`` (HOOKS)
in mmpretrain's registries. See docs/dyn_adapter.md."""
from .adapters import Adapter, BlockAdapter, LoRA
from .classifier import DynAdapterClassifier, resolve_exits
from .heads import ExitHead, balanced_hidden_layers
from .loss_weight_hook import ExitLossWeightHook, exit_loss_weights
from .metric import ExitMetric

__all__ = ['DynAdapterClassifier', 'Adapter', 'LoRA', 'BlockAdapter', 'ExitHead', 'ExitMetric',
           'ExitLossWeightHook', 'exit_loss_weights', 'balanced_hidden_layers', 'resolve_exits']
