"""Turn a plain ConvModule of an mmdet neck or head into one whose conv is a PDConv2d."""
import torch.nn as nn
from mmcv.cnn import ConvModule

from ..ops import PDArgs


def to_pd_conv_module(module: ConvModule, pd: PDArgs) -> ConvModule:
    """A ConvModule with the same geometry and activation whose conv is a PDConv2d.

    The branch BNs of the PDConv2d replace the module's norm (built with its ``norm_cfg``, or plain BN
    when the module had none), so the new module has no norm of its own and its conv no bias: a bias
    after the branch BNs would duplicate their shift.
    """
    conv = module.conv
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f'only nn.Conv2d convs can become PDConv2d, got {conv!r}')
    norm_cfg = dict(module.norm_cfg) if module.with_norm else dict(type='BN')
    conv_cfg = dict(type='PDConv2d', norm_cfg=norm_cfg, **pd.to_dict())
    return ConvModule(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=False, conv_cfg=conv_cfg,
                      norm_cfg=None, act_cfg=module.act_cfg, inplace=module.inplace, order=module.order)
