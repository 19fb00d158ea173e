"""PDDR backbones, necks and heads (registered in mmengine's root MODELS registry and mmdet's / mmpretrain's)."""
from .backbones import PDDRBackbone, PDResNet, convert_backbone
from .convert import convert_to_pd
from .dense_heads import PDRetinaHead
from .layer_select import trace_conv_consumers
from .necks import PDFPN
from .plain_to_pd import find_block_convs, plain_to_pd_layer, plain_to_pd_state_dict

__all__ = ['PDResNet', 'PDDRBackbone', 'PDFPN', 'PDRetinaHead', 'convert_to_pd', 'convert_backbone',
           'trace_conv_consumers', 'plain_to_pd_layer', 'plain_to_pd_state_dict', 'find_block_convs']
