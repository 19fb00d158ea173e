"""MixedConv2d: the deploy form of a PD-B layer."""
from typing import Tuple

import torch
import torch.nn as nn
from torch import Tensor

from . import onnx_export
from .fusion import mix_kernels, mixed_conv2d
from .refine import Refinement


class MixedConv2d(nn.Module):
    """One convolution per sample, whose kernel and bias mix the folded branch kernels with the
    refinement's weights for that sample: ``conv(x_n, sum_b w_nb K_b) + sum_b w_nb b_b``.

    ``weight`` holds the branch kernels stacked along the output axis, (branches * out, in / groups, kh, kw):
    4-D, so ``model.to(memory_format=torch.channels_last)`` converts it like any conv weight.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Tuple[int, int], stride: Tuple[int, int],
                 padding: Tuple[int, int], dilation: Tuple[int, int], groups: int, num_branches: int,
                 reduction: int = 16, temperature: float = 1.0) -> None:
        super().__init__()
        self.out_channels, self.num_branches = out_channels, num_branches
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.refine = Refinement(in_channels, num_branches, reduction, temperature)
        self.weight = nn.Parameter(torch.zeros((num_branches * out_channels, in_channels // groups) +
                                               tuple(kernel_size)))
        self.bias = nn.Parameter(torch.zeros(num_branches, out_channels))

    def branch_kernels(self) -> Tensor:
        """The folded branch kernels, (branches, out, in / groups, kh, kw)."""
        return self.weight.reshape((self.num_branches, self.out_channels) + self.weight.shape[1:])

    def kernel_bias(self) -> Tuple[Tensor, Tensor]:
        """The folded branch kernels and biases, (branches, out, ...) and (branches, out): ``PDConv2d``'s."""
        return self.branch_kernels(), self.bias

    def forward(self, x: Tensor) -> Tensor:
        if onnx_export.use_placeholder():  # a dynamic-batch ONNX export only: same mix, exported as a Loop
            weights = self.refine(x)
            return onnx_export.per_sample_conv2d_placeholder(x, mix_kernels(weights, self.branch_kernels()),
                                                             weights @ self.bias, self.stride, self.padding,
                                                             self.dilation, self.groups)
        return mixed_conv2d(x, self.refine(x), self.branch_kernels(), self.bias, self.stride, self.padding,
                            self.dilation, self.groups)

    def extra_repr(self) -> str:
        k = tuple(self.weight.shape[-2:])
        return (f'{self.weight.shape[1] * self.groups}, {self.out_channels}, kernel_size={k}, stride={self.stride}, '
                f'padding={self.padding}, dilation={self.dilation}, groups={self.groups}, '
                f'branches={self.num_branches}')
