"""RPGConv2d: a convolution whose kernel is generated from the model ring at every forward."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .ring import ModelRing


class RPGConv2d(nn.Module):
    """``kernel = (ring[index] * sign).view(shape) * scale``, then the convolution of the conv it replaces.

    ``index`` (int32) and ``sign`` x ``scale`` (``coef``, one float per kernel element: the sign is folded
    into the layer's fixed scale, so the forward is one gather and one multiply) are rebuilt from the seed
    when the model is built. They are tensors moved with the module (``_apply``), not buffers: not in the
    state dict, and not broadcast by DDP at every step. The gradient reaches the ring through the gather:
    each ring entry gets the sum, over its uses, of sign x scale x the kernel element's gradient.

    The ring lives once, in the :class:`ModelRing` registered at the converted network's root; this layer
    only refers to it (not a submodule, so the ring is saved and optimised once). ``deploy_module()``
    returns the plain convolution (the class of the one replaced) holding the generated kernel.
    """

    def __init__(self, conv: nn.Conv2d, ring: ModelRing, ring_id: int, index: Tensor, coef: Tensor,
                 scale: float) -> None:
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        self.weight_shape = tuple(conv.weight.shape)
        self.conv_type = type(conv)
        self.bias: Optional[nn.Parameter] = conv.bias
        self.ring_id, self.scale = ring_id, float(scale)
        self.__dict__['ring'] = ring  # a reference, not a submodule
        self.index = index.to(torch.int32)
        self.coef = coef.to(conv.weight.dtype)

    def _apply(self, fn, *args, **kwargs):
        self.index, self.coef = fn(self.index), fn(self.coef)  # .to(device), .half(), ... as for buffers
        return super()._apply(fn, *args, **kwargs)

    def kernel(self) -> Tensor:
        ring = self.ring.rings[self.ring_id]
        return (ring.index_select(0, self.index) * self.coef).view(self.weight_shape)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.kernel(), self.bias, self.stride, self.padding, self.dilation, self.groups)

    @torch.no_grad()
    def deploy_module(self) -> nn.Conv2d:
        """The plain convolution computing what this layer computes now."""
        kernel = self.kernel()
        conv = self.conv_type(self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                              padding=self.padding, dilation=self.dilation, groups=self.groups,
                              bias=self.bias is not None).to(kernel)
        conv.weight.copy_(kernel)
        if self.bias is not None:
            conv.bias.copy_(self.bias)
            conv.bias.requires_grad_(self.bias.requires_grad)
        return conv.train(self.training)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        if prefix + 'weight' in state_dict:
            raise ValueError(
                f'{prefix}weight: the checkpoint holds a plain kernel for a layer whose kernel RPG generates from the '
                'ring: a plain (e.g. ImageNet) checkpoint cannot initialise an RPG network. Train it from scratch '
                '(init_cfg=None), or load a checkpoint of the same RPG model.')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        s = (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, '
             f'padding={self.padding}')
        if self.dilation != (1, ) * len(self.dilation):
            s += f', dilation={self.dilation}'
        if self.groups != 1:
            s += f', groups={self.groups}'
        return s + f', bias={self.bias is not None}, ring={self.ring_id}, scale={self.scale:.4g}'
