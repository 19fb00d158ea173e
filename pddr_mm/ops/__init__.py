from .branches import BRANCHES, Branch, ConvBN, LayerSpec, build_branch, filter_branches
from .deploy import deploy_layers, fuse_pd_conv_bn, is_deployed, switch_to_deploy
from .fusion import (bn_scale_shift, fold_bn, identity_kernel, mix_kernels, mixed_conv2d, pad_to_window,
                     per_sample_conv2d, stacked_conv2d, sum_kernels, to_layer_groups)
from .mixed_conv import MixedConv2d
from .pd_args import DEFAULT_BRANCHES, PD_ARGS, PDArgs
from .pd_conv import PDConv2d
from .refine import Refinement

__all__ = [
    'PDConv2d', 'PDArgs', 'MixedConv2d', 'Refinement', 'BRANCHES', 'Branch', 'ConvBN', 'LayerSpec', 'build_branch',
    'filter_branches', 'deploy_layers', 'switch_to_deploy', 'fuse_pd_conv_bn', 'is_deployed', 'bn_scale_shift', 'fold_bn',
    'pad_to_window', 'to_layer_groups', 'identity_kernel', 'sum_kernels', 'mix_kernels', 'mixed_conv2d',
    'per_sample_conv2d', 'stacked_conv2d', 'DEFAULT_BRANCHES', 'PD_ARGS'
]
