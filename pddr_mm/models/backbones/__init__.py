"""PDDR backbones: ``PDDRBackbone`` converts any backbone of the scope that builds it; ``PDResNet`` is its
preset for the scope's own ResNet (mmdet's in mmdet's and mmengine's root MODELS, mmpretrain's in
mmpretrain's MODELS) with the paper's layer selection."""
from .pd_resnet import PAPER_LAYERS, PDResNet
from .pddr_backbone import PDDRBackbone

__all__ = ['PDResNet', 'PDDRBackbone', 'PAPER_LAYERS']
