"""PDDR backbones.

``PDResNet`` is registered once per scope, each built on that library's ResNet: mmdet's (in mmdet's and
mmengine's root MODELS) and, where mmpretrain is installed, mmpretrain's (in mmpretrain's MODELS).
``PDDRBackbone`` (mmengine's root MODELS) converts any backbone of the scope that builds it.
"""
import importlib.util

from .pd_resnet import PDBasicBlock, PDBlockMixin, PDBottleneck, PDResNet, PDResNetMixin
from .pddr_backbone import PDDRBackbone
from .plain_to_pd import find_block_convs, plain_to_pd_layer, plain_to_pd_state_dict

__all__ = ['PDResNet', 'PDDRBackbone', 'PDBasicBlock', 'PDBottleneck', 'PDBlockMixin', 'PDResNetMixin',
           'plain_to_pd_layer', 'plain_to_pd_state_dict', 'find_block_convs']

if importlib.util.find_spec('mmpretrain') is not None:
    from .pd_resnet_mmpretrain import PDResNet as MMPretrainPDResNet  # noqa: E402
    __all__ += ['MMPretrainPDResNet']
