"""A branch type defined outside pddr_mm, as a user would: DBB's average-pooling branch.

Loaded by a config's ``custom_imports`` in test_custom_branch.py; nothing in pddr_mm knows it.
"""
import torch.nn as nn
from mmcv.cnn import build_norm_layer

from pddr_mm.ops import BRANCHES, Branch, bn_scale_shift, identity_kernel


@BRANCHES.register_module(name='avg_example')
class AvgPoolBranch(Branch):
    """kxk average pooling (zero padding counted: a convolution with a constant kernel) and a BN."""

    def __init__(self, layer):
        super().__init__(layer)
        self.pool = nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding, count_include_pad=True)
        self.bn = build_norm_layer(layer.norm_cfg, layer.out_channels)[1]

    @classmethod
    def check(cls, layer):
        if layer.in_channels != layer.out_channels or layer.dilation != (1, 1):
            raise ValueError('it needs in_channels == out_channels and no dilation')

    def forward(self, x):
        return self.bn(self.pool(x))

    def kernel_bias(self):
        scale, shift = bn_scale_shift(self.bn)
        kh, kw = self.layer.kernel_size
        kernel = identity_kernel(self.layer.out_channels, self.layer.groups, (1, 1), scale).repeat(1, 1, kh, kw)
        return kernel * (scale / (kh * kw)).reshape(-1, 1, 1, 1), shift
