"""Shared helpers that turn plain 3x3 ConvModules of mmdet modules into PDDR ones."""
from typing import Dict, Sequence

import torch.nn as nn
from mmcv.cnn import ConvModule

from ..ops import PD_ARGS


def pd_args(mode: str = 'A', branches: Sequence[str] = ('standard', 'standard', 'group', 'skeleton'),
            branch_groups: int = 64, reduction: int = 16, temperature: float = 1.0, forward_path: str = 'auto',
            deploy: bool = False) -> Dict:
    """The PDDR keyword arguments (exactly ``pddr_mm.ops.PD_ARGS``) as one dict for PDConv2d."""
    if not isinstance(branches, (str, dict)):  # a lone name or dict is left for PDConv2d's clear error
        branches = tuple(branches)
    args = dict(mode=mode, branches=branches, branch_groups=branch_groups, reduction=reduction,
                temperature=temperature, forward_path=forward_path, deploy=deploy)
    assert tuple(args) == tuple(PD_ARGS), 'pd_args() must list exactly pddr_mm.ops.PD_ARGS'
    return args


def to_pd_conv_module(module: ConvModule, pd_kwargs: Dict) -> ConvModule:
    """A ConvModule with the same geometry and activation whose conv is a PDConv2d.

    The branch BNs of the PDConv2d replace the module's norm (built with its ``norm_cfg``, or plain BN
    when the module had none), so the new module has no norm of its own and its conv no bias: a bias
    after the branch BNs would duplicate their shift.
    """
    conv = module.conv
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f'only nn.Conv2d convs can become PDConv2d, got {conv!r}')
    norm_cfg = dict(module.norm_cfg) if module.with_norm else dict(type='BN')
    conv_cfg = dict(type='PDConv2d', norm_cfg=norm_cfg, **pd_kwargs)
    return ConvModule(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=False, conv_cfg=conv_cfg,
                      norm_cfg=None, act_cfg=module.act_cfg, inplace=module.inplace, order=module.order)
