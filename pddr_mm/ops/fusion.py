"""The fusion math of PDDR: pure, differentiable tensor functions, one per idea.

A branch becomes a kernel in the layer's full window and grouping, plus a bias:

    kernel, bias = fold_bn(conv.weight, bn)          # BN(conv(x)) == conv(x, kernel) + bias
    kernel = pad_to_window(kernel, window)           # a kx1, 1xk or 1x1 kernel centred in the kxk window
    kernel = to_layer_groups(kernel, g, layer_g)     # a finer-grouped kernel as block diagonal of the layer's
    kernel = identity_kernel(...)                    # a BN-only branch: the identity as a convolution

PD-A sums the branches' kernels and biases (``sum_kernels``); PD-B mixes them per sample (``mix_kernels``)
and convolves each sample with its own kernel (``per_sample_conv2d``). The deploy forms call these
functions once, under ``torch.no_grad()``; the frozen-BN training path calls them on every forward (so
each writes as few kernel-sized tensors as it can), and autograd carries the gradients back to the branch
parameters, exactly as through the branch-by-branch computation.
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


def bn_scale_shift(bn: _BatchNorm) -> Tuple[Tensor, Tensor]:
    """The per-channel affine map ``x * scale + shift`` of an eval-mode BN (BN, SyncBN, ...).

    ``scale = gamma / sqrt(var + eps)``, ``shift = beta - mean * scale``; differentiable in gamma and beta.
    """
    check_foldable_bn(bn)
    scale = (bn.running_var + bn.eps).rsqrt()
    shift = -bn.running_mean * scale
    if bn.affine:
        scale = bn.weight * scale
        shift = bn.bias + bn.weight * shift
    return scale, shift


def fold_bn(kernel: Tensor, bn: _BatchNorm) -> Tuple[Tensor, Tensor]:
    """Fold an eval-mode BN that follows a bias-free conv: ``BN(conv(x, K)) == conv(x, K') + b'``.

    ``K'`` is ``K`` times ``scale`` per output channel, computed by the BN op itself on the kernel's rows (eval
    mode, zero mean, no shift): the same product, and a backward that reduces gamma's gradient without a
    kernel-sized temporary.
    """
    _, shift = bn_scale_shift(bn)
    rows = kernel.reshape(1, kernel.shape[0], -1)
    folded = F.batch_norm(rows, torch.zeros_like(bn.running_mean), bn.running_var, bn.weight if bn.affine else None,
                          None, False, 0.0, bn.eps)
    return folded.reshape(kernel.shape), shift


def pad_to_window(kernel: Tensor, window: Sequence[int]) -> Tensor:
    """Zero-pad an (out, in, h, w) kernel to the (kh, kw) window, centred (ACNet, RepVGG).

    Exact for dilated convolutions too: the padding happens in undilated kernel space, and the branch
    convolution sees the centre rows/columns of the window (see ``branches.ConvBN``).
    """
    h, w = kernel.shape[-2:]
    kh, kw = window
    if h > kh or w > kw or (kh - h) % 2 or (kw - w) % 2:
        raise ValueError(f'cannot centre a {(h, w)} kernel in a {(kh, kw)} window')
    top, left = (kh - h) // 2, (kw - w) // 2
    return F.pad(kernel, [left, left, top, top]) if top or left else kernel


def to_layer_groups(kernel: Tensor, groups: int, layer_groups: int) -> Tensor:
    """A kernel convolved with ``groups`` groups as the same map with the layer's coarser ``layer_groups``.

    (out, in / groups, h, w) -> (out, in / layer_groups, h, w): each layer group holds ``groups //
    layer_groups`` branch groups on its block diagonal, zeros elsewhere (DBB's group-to-dense, per group).
    """
    if groups == layer_groups:
        return kernel
    if groups % layer_groups:
        raise ValueError(f'a kernel with {groups} groups does not fit a layer with {layer_groups} groups')
    r = groups // layer_groups
    out, in_per_group, h, w = kernel.shape
    # (layer groups, r, out / groups, in / groups, h, w) with r last: diag_embed writes the r blocks onto
    # the diagonal of an r x r grid of zeros; its backward is a view, so no kernel-sized temporary
    blocks = kernel.reshape(layer_groups, r, out // groups, in_per_group, h, w).permute(0, 2, 3, 4, 5, 1)
    return torch.diag_embed(blocks, 0, 1, 3).reshape(out, r * in_per_group, h, w)


def identity_kernel(channels: int, groups: int, window: Sequence[int], like: Tensor) -> Tensor:
    """The identity map as a (channels, channels / groups, kh, kw) kernel: 1 at each channel's own input
    channel in the window's centre (RepVGG's identity branch)."""
    per_group = channels // groups
    kernel = like.new_zeros((channels, per_group) + tuple(window))
    idx = torch.arange(channels, device=like.device)
    kernel[idx, idx % per_group, window[0] // 2, window[1] // 2] = 1
    return kernel


def sum_kernels(tensors: Sequence[Tensor]) -> Tensor:
    """The sum of same-shaped tensors, in one new tensor: the first add allocates and the rest add into it
    (no new kernel-sized tensor per branch; autograd's add needs none of its inputs for backward)."""
    if len(tensors) == 1:
        return tensors[0]
    total = tensors[0] + tensors[1]
    for t in tensors[2:]:
        total = total.add_(t)
    return total


def mix_kernels(weights: Tensor, kernels: Tensor) -> Tensor:
    """Per-sample kernels ``sum_b weights[n, b] * kernels[b]`` as one matrix product: (N, B) x (B, ...)."""
    return (weights @ kernels.reshape(kernels.shape[0], -1)).reshape((weights.shape[0], ) + kernels.shape[1:])


def full_precision(x: Tensor) -> torch.autocast:
    """Autocast off for the fusion math (folds and mixes run in the parameters' precision, float32 under
    mixed precision); the convolution after it casts its kernel once, as autocast does for any conv."""
    return torch.autocast(x.device.type, enabled=False)


def mixed_conv2d(x: Tensor, weights: Tensor, kernels: Tensor, biases: Tensor, stride: Sequence[int],
                 padding: Sequence[int], dilation: Sequence[int], groups: int = 1) -> Tensor:
    """PD-B with fixed branch kernels (B, out, in / groups, kh, kw) and biases (B, out): each sample convolved
    with its own mix, for the per-sample branch ``weights`` (N, B)."""
    with full_precision(x):
        weights = weights.to(kernels.dtype)
        kernels, biases = mix_kernels(weights, kernels), weights @ biases.to(kernels.dtype)
    return per_sample_conv2d(x, kernels, biases, stride, padding, dilation, groups)


def stacked_conv2d(x: Tensor, weights: Tensor, kernels: Tensor, biases: Tensor, stride: Sequence[int],
                   padding: Sequence[int], dilation: Sequence[int], groups: int = 1) -> Tensor:
    """``mixed_conv2d`` computed the other way round: one dense convolution with every branch kernel, then each
    sample's weighted sum of the branch outputs. B times the convolution's work and an activation B times as
    large, but no per-sample grouped convolution, which some backends (cuDNN) run far slower than dense ones.
    """
    b, out = kernels.shape[:2]
    # the branch kernels stacked along the output axis within each layer group, so group j's inputs still
    # produce group j's outputs: (B, g, out / g, ...) -> (g, B, out / g, ...)
    stacked = kernels.reshape((b, groups, out // groups) + kernels.shape[2:]).transpose(0, 1).reshape(
        (b * out, ) + kernels.shape[2:])
    y = F.conv2d(x, stacked, None, stride, padding, dilation, groups)
    n, _, h, w = y.shape
    y = y.reshape(n, groups, b, out // groups, h, w)
    mixed = torch.einsum('ngbchw,nb->ngchw', y, weights.to(y.dtype)).reshape(n, out, h, w)
    return mixed + (weights @ biases).to(y.dtype)[:, :, None, None]


def per_sample_conv2d(x: Tensor, kernels: Tensor, biases: Tensor, stride: Sequence[int], padding: Sequence[int],
                      dilation: Sequence[int], groups: int = 1) -> Tensor:
    """Convolve sample n of ``x`` with ``kernels[n]`` (N, out, in / groups, kh, kw) plus ``biases[n]`` (N, out).

    The batch is folded into the channel axis and run as one grouped convolution (``N * groups`` groups),
    so sample n only ever meets its own kernel: exact for every batch size.
    """
    n, c, h, w = x.shape
    if kernels.shape[0] != n or kernels.shape[2] * groups != c:
        raise ValueError(f'per-sample kernels {tuple(kernels.shape)} (groups={groups}) do not match input '
                         f'{tuple(x.shape)}')
    out = F.conv2d(x.reshape(1, n * c, h, w), kernels.reshape((-1, ) + kernels.shape[2:]), biases.reshape(-1),
                   stride, padding, dilation, n * groups)
    return out.reshape(n, -1, out.shape[-2], out.shape[-1])
