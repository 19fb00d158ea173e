"""PDDR (Parameter Disentanglement for Diverse Representations) and RPG (Recurrent Parameter Generators,
:mod:`pddr_mm.rpg`) for MMDetection and MMPretrain.

Importing the package registers its modules in mmengine's root registries, which every downstream
scope (mmdet, mmpretrain) falls back to, and makes mmengine's checkpoint loading work under
torch >= 2.6.
"""
from . import hooks, models, rpg  # noqa: F401  (registers the modules)
from .compat import allow_mmengine_checkpoints
from .ops import PDConv2d, Refinement, fuse_pd_conv_bn, is_deployed, switch_to_deploy
from .version import __version__

allow_mmengine_checkpoints()

__all__ = ['PDConv2d', 'Refinement', 'switch_to_deploy', 'fuse_pd_conv_bn', 'is_deployed', '__version__']
