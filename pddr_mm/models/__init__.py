"""PDDR backbones, necks and heads (registered in mmengine's root MODELS registry)."""
from .backbones import PDBasicBlock, PDBottleneck, PDResNet, plain_to_pd_layer, plain_to_pd_state_dict
from .dense_heads import PDRetinaHead
from .necks import PDFPN

__all__ = ['PDResNet', 'PDBasicBlock', 'PDBottleneck', 'PDFPN', 'PDRetinaHead', 'plain_to_pd_layer',
           'plain_to_pd_state_dict']
