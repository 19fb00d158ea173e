"""PDResNet: the scope's own ResNet with the paper's PDDR layers, made by the generic conversion.

``type='PDResNet'`` takes every argument of the ResNet of its scope, with that library's defaults
(mmdet's in mmdet configs and scope-less builds: ``norm_eval=True``, ``frozen_stages``, ``dcn`` refused;
mmpretrain's in mmpretrain configs: BN trains, ``zero_init_residual=True``, ``drop_path_rate``), plus the
PDDR arguments (:class:`pddr_mm.ops.PDArgs`). It builds that ResNet and converts the paper's layers with
the code of ``PDDRBackbone`` (``convert_to_pd``): the 3x3 convolutions of the residual blocks (BasicBlock
conv1/conv2, Bottleneck conv2). The stem, the 1x1 convolutions and the downsample stay plain. Module
names and checkpoint keys are the ResNet's, so a plain ResNet checkpoint (torchvision, mmdet or
mmpretrain naming) starts it computing what the plain network did, in eval mode.
"""
import importlib.util
from typing import Callable, Dict

import torch.nn as nn
from mmdet.models.backbones import ResNet as MMDetResNet
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.model.weight_init import BaseInit
from mmengine.registry import MODELS, WEIGHT_INITIALIZERS

from torch.nn.modules.batchnorm import _BatchNorm

from ...ops import PDArgs, PDConv2d
from ...ops.pd_conv import check_norm_cfg
from ...surgery import convert_backbone
from ..convert import convert_to_pd
from .pddr_backbone import PD_HINT

# the paper's selection: residual-block 3x3 convs (1x1 convs and the 7x7 / deep stem are not 3x3 here)
PAPER_LAYERS = dict(include=(r'^layer\d+\.\d+\.conv\d$', ), kernel_sizes=(3, ))
TRACE_SHAPE = (64, 64)  # enough for the 32x downsampling of a ResNet; the layers found do not depend on it


@WEIGHT_INITIALIZERS.register_module(name='PDZeroInitResidual')
class ZeroInitResidual(BaseInit):
    """``zero_init_residual`` for BasicBlocks, whose last norm (norm2) is now conv2's branch BNs: zero their
    weights and biases, so each block starts as the identity. PDResNet appends it to the ResNet's
    ``init_cfg``, so it runs in ``init_weights`` after the ResNet's own BN init, as the plain rule does."""

    def __call__(self, module: nn.Module) -> None:
        for name in module.res_layers:
            for block in getattr(module, name):
                conv = getattr(block, 'conv2', None)
                if isinstance(conv, PDConv2d) and not hasattr(block, 'conv3') and not conv.deploy:
                    for m in conv.modules():
                        if isinstance(m, _BatchNorm):
                            nn.init.zeros_(m.weight)
                            nn.init.zeros_(m.bias)


def _preset(resnet: type, zero_init_applies: Callable[[Dict], bool]) -> Callable[..., nn.Module]:

    def PDResNet(depth: int, **kwargs) -> nn.Module:  # noqa: N802  (the registered type name)
        pd = PDArgs.pop_from(kwargs)
        if kwargs.get('dcn') is not None:
            raise ValueError('PDResNet does not support dcn: a deformable conv has no fixed kernel to fuse branches '
                             'into. Remove dcn/stage_with_dcn from the backbone config.')
        if kwargs.get('norm_cfg') is not None:  # what the branch BNs are built with: it must fold
            check_norm_cfg(kwargs['norm_cfg'], kwargs.get('base_channels', 64))
        model = resnet(depth, **kwargs)
        convert_backbone(model, 'PDResNet', convert_to_pd, kwargs.get('in_channels', 3), TRACE_SHAPE, hint=PD_HINT,
                         **PAPER_LAYERS, **pd.to_dict())
        if model.zero_init_residual and zero_init_applies(kwargs):
            init_cfg = model.init_cfg if isinstance(model.init_cfg, list) else [model.init_cfg]
            model.init_cfg = [c for c in init_cfg if c] + [dict(type='PDZeroInitResidual')]
        return model

    PDResNet.__doc__ = f'{resnet.__module__}.ResNet with PDDR residual-block 3x3 convs (see this module).'
    return PDResNet


# mmdet zero-initialises the residual norms only without init_cfg and pretrained; mmpretrain unless Pretrained
PDResNet = _preset(MMDetResNet, lambda kw: kw.get('init_cfg') is None and kw.get('pretrained') is None)
MMDET_MODELS.register_module('PDResNet', module=PDResNet)
MODELS.register_module('PDResNet', module=PDResNet)

if importlib.util.find_spec('mmpretrain') is not None:
    from mmpretrain.models.backbones import ResNet as MMPretrainResNet
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

    def _not_pretrained(kwargs: Dict) -> bool:
        init_cfg = kwargs.get('init_cfg')
        return not (isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained')

    MMPretrainPDResNet = _preset(MMPretrainResNet, _not_pretrained)
    MMPRETRAIN_MODELS.register_module('PDResNet', module=MMPretrainPDResNet)
