"""PDDR (Parameter Disentanglement for Diverse Representations), RPG (Recurrent Parameter Generators,
:mod:`pddr_mm.rpg`) and Dyn-Adapter (:mod:`pddr_mm.dyn_adapter`) for MMDetection and MMPretrain.

Importing the package registers its modules in mmengine's root registries, which every downstream
scope (mmdet, mmpretrain) falls back to, and makes mmengine's checkpoint loading work under
torch >= 2.6. With mmpretrain installed it also registers Dyn-Adapter (``pddr_mm.dyn_adapter``) in
mmpretrain's registries.
"""
import importlib.util

from . import datasets, hooks, models, rpg  # noqa: F401  (registers the modules)
from .compat import allow_mmengine_checkpoints
from .ops import PDConv2d, Refinement, fuse_pd_conv_bn, is_deployed, switch_to_deploy
from .version import __version__

allow_mmengine_checkpoints()

if importlib.util.find_spec('mmpretrain') is not None:  # Dyn-Adapter lives in mmpretrain's registries
    from . import dyn_adapter  # noqa: F401

__all__ = ['PDConv2d', 'Refinement', 'switch_to_deploy', 'fuse_pd_conv_bn', 'is_deployed', '__version__']
