"""Model-level deploy switching: one call turns any model that holds PDDR or RPG layers into its deploy form.

Two kinds of layer have a deploy form. A PDConv2d fuses its branches in place (``switch_to_deploy()``, it
stays a PDConv2d). A module with a ``deploy_module()`` method is *replaced* by what that returns, under the
same name, or removed where it returns None, as timm's ``reparameterize_model`` does with ``fuse()``: RPG's
generated convolutions become plain ``nn.Conv2d`` and their shared ring goes (:mod:`pddr_mm.rpg`).
"""
from typing import List

import torch.nn as nn
from mmcv.cnn import ConvModule
from torch.nn.modules.batchnorm import _BatchNorm

from ..utils import set_module
from .pd_conv import PDConv2d


def deploy_layers(model: nn.Module) -> List[nn.Module]:
    """The modules of ``model`` with a deploy form still to take: unfused PDConv2d, and modules with a
    ``deploy_module()`` (RPG's)."""
    return [m for m in model.modules()
            if (isinstance(m, PDConv2d) and not m.deploy) or callable(getattr(m, 'deploy_module', None))]


def switch_to_deploy(model: nn.Module) -> int:
    """Turn every PDDR and RPG layer of ``model`` into its deploy form, in place; return how many layers
    were switched now.

    Works on detectors, classifiers and wrapped models (DDP and mmengine wrappers expose the wrapped
    model through ``modules()``). Already fused layers are skipped, so a second call returns 0. The
    model must be in eval mode: train-mode BN has no fixed fold. Every replacement is computed before any
    is put in place, so a replacement may still read modules that are removed (RPG's ring).
    """
    fused = sum(int(m.switch_to_deploy()) for m in list(model.modules()) if isinstance(m, PDConv2d))
    replaced = [(name, m.deploy_module()) for name, m in model.named_modules()
                if callable(getattr(m, 'deploy_module', None))]
    for name, new in replaced:
        set_module(model, name, new)
    return fused + sum(new is not None for _, new in replaced)


def fuse_pd_conv_bn(model: nn.Module) -> int:
    """Fold into each deployed PDDR layer the BN that its ConvModule applies right after it, replacing that
    BN with ``nn.Identity``; returns how many were folded.

    A ``conv_cfg=dict(type='PDConv2d')`` swap keeps the ConvModule's own norm after the PDDR layer, and mmcv's
    ``fuse_conv_bn`` does not look inside a PDConv2d, so this is its counterpart for them (call it first).
    Like ``fuse_conv_bn`` it changes the module structure: for inference and export, not for checkpoints.
    """
    count = 0
    for m in list(model.modules()):
        if isinstance(m, ConvModule) and isinstance(m.conv, PDConv2d) and m.conv.deploy \
                and isinstance(m.norm, _BatchNorm) and m.order.index('norm') == m.order.index('conv') + 1:
            m.conv.fold_following_bn(m.norm)
            setattr(m, m.norm_name, nn.Identity())
            count += 1
    return count


def is_deployed(model: nn.Module) -> bool:
    """True if ``model`` holds PDDR layers, all of them fused, and no layer is left to switch (no RPG layer).

    A deployed RPG network holds nothing of RPG (it is the plain network), so, like any plain model, it is
    not 'deployed' here.
    """
    layers = [m for m in model.modules() if isinstance(m, PDConv2d)]
    return bool(layers) and not deploy_layers(model)
