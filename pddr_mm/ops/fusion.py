"""The fusion math of PDDR, in one place.

Every PDDR module (the convolution, and through it the backbones, necks and heads) fuses with these
functions only. They are plain differentiable tensor functions: the deploy path calls them once under
``torch.no_grad()``, the frozen-BN training path calls them on every forward so that gradients reach
the branch parameters exactly as through the branch-by-branch computation.
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm


def check_foldable_bn(bn: _BatchNorm) -> None:
    """Raise unless ``bn`` normalises with fixed statistics, the only case a fold is exact."""
    if not isinstance(bn, _BatchNorm):
        raise TypeError(f'only BatchNorm layers can be folded into a convolution, got {type(bn).__name__}')
    if bn.training:
        raise RuntimeError(
            f'{type(bn).__name__} is in training mode: it normalises with batch statistics, so it has no '
            'fixed fold. Call model.eval() (or freeze the BN, e.g. norm_eval=True) before fusing.')
    if bn.running_mean is None or bn.running_var is None:
        raise RuntimeError(f'{type(bn).__name__} has track_running_stats=False: it has no fixed fold')


def fold_bn(kernel: Tensor, bn: _BatchNorm) -> Tuple[Tensor, Tensor]:
    """Fold an eval-mode BN that follows a bias-free conv into that conv's kernel and a bias.

    ``BN(conv(x, K)) = conv(x, K * g / s) + (b - m * g / s)`` with ``s = sqrt(var + eps)``. Works for
    any ``_BatchNorm`` subclass (BN, SyncBN) and keeps the graph, so gradients reach ``K``, ``g`` and ``b``.
    """
    check_foldable_bn(bn)
    std = (bn.running_var.to(kernel.dtype) + bn.eps).sqrt()
    mean = bn.running_mean.to(kernel.dtype)
    if bn.affine:
        scale = bn.weight / std
        shift = bn.bias - mean * scale
    else:
        scale = 1.0 / std
        shift = -mean * scale
    return kernel * scale.reshape(-1, 1, 1, 1), shift


def pad_kernel(kernel: Tensor, size: Tuple[int, int]) -> Tensor:
    """Zero-pad a (h, w) kernel, centred, to ``size`` (for instance a kx1 skeleton kernel to kxk).

    Padding happens in undilated kernel space, so it stays exact for dilated convolutions whose small
    kernel samples the centre row/column of the large window.
    """
    dh, dw = size[0] - kernel.shape[-2], size[1] - kernel.shape[-1]
    if dh < 0 or dw < 0 or dh % 2 or dw % 2:
        raise ValueError(f'cannot centre a {tuple(kernel.shape[-2:])} kernel in {tuple(size)}')
    if dh == 0 and dw == 0:
        return kernel
    return F.pad(kernel, [dw // 2, dw // 2, dh // 2, dh // 2])


def group_to_dense(kernel: Tensor, groups: int) -> Tensor:
    """Turn a grouped kernel (out, in/groups, h, w) into the equivalent dense (out, in, h, w) one."""
    if groups == 1:
        return kernel
    out_channels, in_per_group, h, w = kernel.shape
    out_per_group = out_channels // groups
    blocks = kernel.reshape(groups, out_per_group, in_per_group, h, w)
    eye = torch.eye(groups, dtype=kernel.dtype, device=kernel.device)
    # dense[g, o, g', i] = blocks[g, o, i] if g == g' else 0
    dense = torch.einsum('goihw,gq->goqihw', blocks, eye)
    return dense.reshape(out_channels, groups * in_per_group, h, w)


def aggregate_kernels(weights: Tensor, kernels: Tensor, biases: Tensor) -> Tuple[Tensor, Tensor]:
    """Mix branch kernels per sample: weights (N, B), kernels (B, O, I, h, w), biases (B, O).

    Returns one kernel (N, O, I, h, w) and one bias (N, O) per sample: ``sum_b w[n, b] * K_b``.
    """
    num_branches = kernels.shape[0]
    mixed = torch.mm(weights, kernels.reshape(num_branches, -1))
    return mixed.reshape((weights.shape[0], ) + kernels.shape[1:]), torch.mm(weights, biases)


def per_sample_conv2d(x: Tensor, kernels: Tensor, biases: Tensor, stride: Sequence[int],
                      padding: Sequence[int], dilation: Sequence[int]) -> Tensor:
    """Convolve sample n of ``x`` with ``kernels[n]`` (plus ``biases[n]``) in one grouped convolution.

    The batch is folded into the channel axis, so sample n only ever meets its own kernel: exact for
    every batch size, including 1 and batch sizes equal to the channel count.
    """
    n, c, h, w = x.shape
    if kernels.shape[0] != n or kernels.shape[2] != c:
        raise ValueError(f'per-sample kernels {tuple(kernels.shape)} do not match input {tuple(x.shape)}')
    out = F.conv2d(
        x.reshape(1, n * c, h, w),
        kernels.reshape((n * kernels.shape[1], ) + kernels.shape[2:]),
        biases.reshape(-1),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=n)
    return out.reshape(n, kernels.shape[1], out.shape[-2], out.shape[-1])
