from .deploy import is_deployed, switch_to_deploy
from .fusion import add_kernel_, bn_scale_shift, combine_parts, fold_bn, merge_parts, per_sample_conv2d
from .pd_conv import BRANCH_TYPES, DEFAULT_BRANCHES, PD_ARGS, PDConv2d
from .refine import Refinement

__all__ = [
    'PDConv2d', 'Refinement', 'switch_to_deploy', 'is_deployed', 'bn_scale_shift', 'fold_bn', 'add_kernel_', 'merge_parts',
    'combine_parts', 'per_sample_conv2d', 'BRANCH_TYPES', 'DEFAULT_BRANCHES', 'PD_ARGS'
]
