"""PDDR backbones, necks and heads (registered in mmengine's root MODELS registry and mmdet's / mmpretrain's)."""
from .backbones import PDDRBackbone, PDResNet
from .convert import convert_to_pd
from .dense_heads import PDRetinaHead
from .necks import PDFPN
from .plain_to_pd import find_block_convs, plain_to_pd_layer, plain_to_pd_state_dict

__all__ = ['PDResNet', 'PDDRBackbone', 'PDFPN', 'PDRetinaHead', 'convert_to_pd', 'plain_to_pd_layer', 'plain_to_pd_state_dict', 'find_block_convs']
