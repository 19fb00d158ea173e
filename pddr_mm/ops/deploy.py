"""Model-level fusion: one call turns any model that holds PDDR layers into its deploy form."""
import torch.nn as nn
from mmcv.cnn import ConvModule
from torch.nn.modules.batchnorm import _BatchNorm

from .pd_conv import PDConv2d


def switch_to_deploy(model: nn.Module) -> int:
    """Fuse every PDDR layer of ``model`` in place and return how many were fused now.

    Works on detectors, classifiers and wrapped models (DDP and mmengine wrappers expose the wrapped
    model through ``modules()``). Already fused layers are skipped, so a second call returns 0. The
    model must be in eval mode: train-mode BN has no fixed fold.
    """
    return sum(int(m.switch_to_deploy()) for m in list(model.modules()) if isinstance(m, PDConv2d))


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
    """True if ``model`` holds PDDR layers and all of them are fused."""
    layers = [m for m in model.modules() if isinstance(m, PDConv2d)]
    return bool(layers) and all(m.deploy for m in layers)
