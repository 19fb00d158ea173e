"""PDDR backbones, necks and heads (registered in mmengine's root MODELS registry)."""
from .backbones import (PDBasicBlock, PDBottleneck, PDDRBackbone, PDResNet, plain_to_pd_layer,
                        plain_to_pd_state_dict)
from .convert import convert_to_pd, trace_conv_consumers
from .dense_heads import PDRetinaHead
from .necks import PDFPN

__all__ = ['PDResNet', 'PDDRBackbone', 'PDBasicBlock', 'PDBottleneck', 'PDFPN', 'PDRetinaHead', 'convert_to_pd',
           'trace_conv_consumers', 'plain_to_pd_layer', 'plain_to_pd_state_dict']
