"""PDDR backbones."""
from .pd_resnet import PDBasicBlock, PDBottleneck, PDResNet
from .plain_to_pd import find_block_convs, plain_to_pd_layer, plain_to_pd_state_dict

__all__ = ['PDResNet', 'PDBasicBlock', 'PDBottleneck', 'plain_to_pd_layer', 'plain_to_pd_state_dict',
           'find_block_convs']
