"""The fusion math of PDDR, in one place.

Every PDDR module (the convolution, and through it the backbones, necks and heads) fuses with these
functions only. They are plain differentiable tensor functions: the deploy path calls them once under
``torch.no_grad()``, the frozen-BN training path calls them on every forward so that gradients reach
the branch parameters exactly as through the branch-by-branch computation.

A branch contributes one or more folded *parts*: a kernel and the groups it was convolved with. A part
smaller than the full window (the kx1 and 1xk skeleton kernels) belongs on the window's centre, and a
grouped part on the block diagonal of the dense kernel. ``add_kernel_`` writes a part into exactly
those entries (zero-padding and group-to-dense without materialising either), which keeps the
per-forward cost of the frozen-BN path to a few passes over one dense kernel.
"""
import threading
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

Part = Tuple[Tensor, int]  # (kernel (..., out, in / groups, h, w), groups)
ScaledPart = Tuple[Tensor, Tensor, int]  # (kernel (out, in / groups, h, w), scale (out, ) of its BN, groups)


_workspaces = threading.local()


def kernel_workspace(shape: Sequence[int], like: Tensor, slot: str = 'mix') -> Tensor:
    """Scratch memory of ``shape`` for a kernel-sized temporary, shared by all layers of this thread.

    Layers run one after another and each use of a slot is consumed before the next layer's, so one
    buffer the size of the largest kernel serves a whole network; per thread, so that models called
    from several threads never share one. Reusing it spares the page faults that a fresh tens-of-MB
    tensor costs on CPU.
    """
    numel = 1
    for n in shape:
        numel *= n
    key = (slot, like.device, like.dtype)
    store = _workspaces.__dict__.setdefault('buffers', {})
    buf = store.get(key)
    if buf is None or buf.numel() < numel:
        buf = store[key] = like.new_empty(numel)
    return buf[:numel].view(tuple(shape))


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


def bn_scale_shift(bn: _BatchNorm, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """The per-channel affine map ``x * scale + shift`` that an eval-mode BN computes.

    ``scale = g / sqrt(var + eps)``, ``shift = b - mean * scale``. Works for any ``_BatchNorm`` subclass
    (BN, SyncBN) and keeps the graph, so gradients reach ``g`` and ``b``.
    """
    check_foldable_bn(bn)
    std = (bn.running_var.to(dtype) + bn.eps).sqrt()
    mean = bn.running_mean.to(dtype)
    if bn.affine:
        scale = bn.weight / std
        shift = bn.bias - mean * scale
    else:
        scale = 1.0 / std
        shift = -mean * scale
    return scale, shift


def fold_bn(kernel: Tensor, bn: _BatchNorm) -> Tuple[Tensor, Tensor]:
    """Fold an eval-mode BN that follows a bias-free conv into that conv's kernel and a bias.

    ``BN(conv(x, K)) = conv(x, K * scale) + shift`` (see ``bn_scale_shift``); differentiable.
    """
    scale, shift = bn_scale_shift(bn, kernel.dtype)
    return kernel * scale.reshape(-1, 1, 1, 1), shift


def _part_view(dense: Tensor, kernel_shape: Sequence[int], groups: int) -> Tensor:
    """A view of the entries of ``dense`` that a part of ``kernel_shape`` occupies.

    Laid out like the part, except that a grouped part's output axis is split into (groups, out / groups).
    """
    kh, kw = dense.shape[-2:]
    h, w = kernel_shape[-2:]
    if h > kh or w > kw or (kh - h) % 2 or (kw - w) % 2:
        raise ValueError(f'cannot centre a {(h, w)} kernel in a {(kh, kw)} window')
    top, left = (kh - h) // 2, (kw - w) // 2
    target = dense[..., top:top + h, left:left + w]
    if groups > 1:
        out_per_group = dense.shape[-4] // groups
        in_per_group = dense.shape[-3] // groups
        # (..., g, o, g', i, h, w) -> the blocks with g == g': (..., o, i, h, w, g) -> (..., g, o, i, h, w)
        target = target.unflatten(-4, (groups, out_per_group)).unflatten(-3, (groups, in_per_group))
        target = target.diagonal(dim1=-6, dim2=-4).movedim(-1, -5)
    return target


def _grouped(kernel: Tensor, groups: int) -> Tensor:
    """``kernel`` in the layout of ``_part_view``."""
    return kernel.unflatten(-4, (groups, kernel.shape[-4] // groups)) if groups > 1 else kernel


class _AddKernel(torch.autograd.Function):
    """In-place add of a part; its backward passes the dense gradient through without copying it
    (autograd's generic in-place-on-a-view rule clones the whole dense gradient on every step)."""

    @staticmethod
    def forward(ctx, dense: Tensor, kernel: Tensor, groups: int) -> Tensor:
        ctx.shape, ctx.groups = kernel.shape, groups
        _part_view(dense, kernel.shape, groups).add_(_grouped(kernel, groups))
        ctx.mark_dirty(dense)
        return dense

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad_kernel = None
        if ctx.needs_input_grad[1]:
            grad_kernel = _part_view(grad, ctx.shape, ctx.groups).reshape(ctx.shape)
        return grad, grad_kernel, None


def add_kernel_(dense: Tensor, kernel: Tensor, groups: int = 1) -> Tensor:
    """Add a folded part into a dense full-size kernel, in place, and return ``dense``.

    ``dense`` is (..., out, in, kh, kw); ``kernel`` is (..., out, in / groups, h, w) with odd h <= kh and
    w <= kw (leading dimensions broadcast). The part lands centred in the window (the zero padding that
    aligns a kx1 kernel with the kxk window, exact for dilated convolutions too because it happens in
    undilated kernel space) and, for ``groups > 1``, on the block diagonal (the dense form of a grouped
    convolution). Differentiable as long as ``dense`` is a fresh, non-leaf tensor.
    """
    if torch.is_grad_enabled() and (dense.requires_grad or kernel.requires_grad):
        grad_shape = torch.broadcast_shapes(dense.shape[:-4], kernel.shape[:-4]) + kernel.shape[-4:]
        return _AddKernel.apply(dense, kernel.expand(grad_shape), groups)
    _part_view(dense, kernel.shape, groups).add_(_grouped(kernel, groups))
    return dense


def _scale_view(scale: Tensor, groups: int) -> Tensor:
    """A per-output-channel ``scale`` that broadcasts against ``_grouped(kernel, groups)``."""
    scale = scale.reshape(-1, 1, 1, 1)
    return scale.unflatten(0, (groups, -1)) if groups > 1 else scale


def _merge_scaled(kernels: Sequence[Tensor], scales: Sequence[Tensor], groups: Sequence[int], in_channels: int,
                  kernel_size: Tuple[int, int]) -> Tensor:
    full = [i for i, (k, g) in enumerate(zip(kernels, groups)) if g == 1 and tuple(k.shape[-2:]) == tuple(kernel_size)]
    if full:
        first = full[0]
        dense = torch.mul(kernels[first], _scale_view(scales[first], 1))
    else:
        first = None
        dense = kernels[0].new_zeros((kernels[0].shape[0], in_channels) + tuple(kernel_size))
    for i, (kernel, scale, g) in enumerate(zip(kernels, scales, groups)):
        if i != first:
            _part_view(dense, kernel.shape, g).addcmul_(_grouped(kernel, g), _scale_view(scale, g))
    return dense


class _MergeScaled(torch.autograd.Function):
    """``merge_parts`` with a hand-written backward that reads the gradient through views of each part's
    entries, where autograd's fold-then-add also wrote the folded kernels and copies of those views."""

    @staticmethod
    def forward(ctx, in_channels: int, kernel_size: Tuple[int, int], groups: Tuple[int, ...], *tensors: Tensor):
        kernels, scales = tensors[:len(groups)], tensors[len(groups):]
        ctx.groups = groups
        ctx.save_for_backward(*tensors)
        return _merge_scaled(kernels, scales, groups, in_channels, kernel_size)

    @staticmethod
    def backward(ctx, grad: Tensor):
        tensors = ctx.saved_tensors
        num = len(ctx.groups)
        kernels, scales = tensors[:num], tensors[num:]
        grad_kernels, grad_scales = [], []
        for i, (kernel, scale, g) in enumerate(zip(kernels, scales, ctx.groups)):
            view = _part_view(grad, kernel.shape, g)  # laid out like _grouped(kernel)
            grad_kernel = grad_scale = None
            if ctx.needs_input_grad[3 + i]:
                grad_kernel = (view * _scale_view(scale, g)).reshape(kernel.shape)
            if ctx.needs_input_grad[3 + num + i]:
                # a batched dot product: bmm ran 4x slower on CPU than a product into reused scratch
                # memory and a sum (a fresh product per part costs its page faults on every step)
                prod = kernel_workspace(view.shape, grad, slot='merge_backward')
                grad_scale = torch.mul(view, _grouped(kernel, g), out=prod).flatten(-3).sum(-1).reshape(-1)
            grad_kernels.append(grad_kernel)
            grad_scales.append(grad_scale)
        return (None, None, None, *grad_kernels, *grad_scales)


def merge_parts(parts: Sequence[ScaledPart], in_channels: int, kernel_size: Tuple[int, int]) -> Tensor:
    """``sum_p kernel_p * scale_p``, each part centred and block-diagonal in one dense (out, in, kh, kw)
    kernel: the PD-A kernel, with every BN folded in.

    The scales are applied while summing (no folded kernel is materialised), which halves the passes over
    the kernels on every frozen-BN training step. Differentiable in kernels and scales.
    """
    kernels = [k for k, _, _ in parts]
    scales = [s for _, s, _ in parts]
    groups = tuple(g for _, _, g in parts)
    if torch.is_grad_enabled() and any(t.requires_grad for t in kernels + scales):
        return _MergeScaled.apply(in_channels, tuple(kernel_size), groups, *kernels, *scales)
    return _merge_scaled(kernels, scales, groups, in_channels, kernel_size)


class _MixKernels(torch.autograd.Function):
    """Per-sample kernels with a hand-written backward.

    Written with autograd ops, the in-place adds of the grouped and skeleton parts into the (view-shaped)
    mixed kernels make autograd copy the whole per-sample gradient several times per step.
    """

    @staticmethod
    def forward(ctx, weights: Tensor, dense: Tensor, dense_branch: Tuple[int, ...], extra_specs: Tuple[Tuple[int, int],
                                                                                                     ...], *extras: Tensor):
        n = weights.shape[0]
        shape = (n, ) + dense.shape[1:]
        if dense.shape[0]:
            mixed = torch.mm(weights[:, list(dense_branch)], dense.reshape(dense.shape[0], -1)).reshape(shape)
        else:
            mixed = weights.new_zeros(shape)
        for kernel, (groups, branch) in zip(extras, extra_specs):
            part = _grouped(kernel, groups)
            _part_view(mixed, kernel.shape, groups).add_(weights[:, branch].reshape((n, ) + (1, ) * part.dim()) * part)
        ctx.dense_branch, ctx.extra_specs = dense_branch, extra_specs
        ctx.save_for_backward(weights, dense, *extras)
        return mixed

    @staticmethod
    def backward(ctx, grad: Tensor):
        weights, dense, *extras = ctx.saved_tensors
        n = weights.shape[0]
        grad_weights = torch.zeros_like(weights)
        grad_dense = None
        if dense.shape[0]:
            flat_grad, flat_dense = grad.reshape(n, -1), dense.reshape(dense.shape[0], -1)
            idx = list(ctx.dense_branch)
            grad_weights[:, idx] += torch.mm(flat_grad, flat_dense.t())
            if ctx.needs_input_grad[1]:
                grad_dense = torch.mm(weights[:, idx].t(), flat_grad).reshape(dense.shape)
        grad_extras = []
        for kernel, (groups, branch) in zip(extras, ctx.extra_specs):
            g = _part_view(grad, kernel.shape, groups)  # (N, ...) laid out like _grouped(kernel)
            k = _grouped(kernel, groups)
            grad_weights[:, branch] += (g * k.unsqueeze(0)).reshape(n, -1).sum(1)
            grad_extras.append(torch.einsum('n,n...->...', weights[:, branch], g).reshape(kernel.shape))
        return (grad_weights, grad_dense, None, None, *grad_extras)


def mix_kernels(weights: Tensor, dense: Tensor, dense_branch: Sequence[int], extras: Sequence[Tuple[Tensor, int, int]],
                biases: Tensor) -> Tuple[Tensor, Tensor]:
    """One kernel and bias per sample for PD-B: ``sum_b weights[n, b] * (kernel_b, bias_b)``.

    Args:
        weights: (N, B) branch weights per sample.
        dense: (S, out, in, kh, kw) full-size dense parts; part s belongs to branch ``dense_branch[s]``.
        extras: the other parts as (kernel, groups, branch index), added into their own entries only.
        biases: (B, out) folded bias of every branch.

    Returns:
        kernels (N, out, in, kh, kw) and biases (N, out).
    """
    extra_specs = tuple((groups, branch) for _, groups, branch in extras)
    mixed = _MixKernels.apply(weights, dense, tuple(dense_branch), extra_specs, *(k for k, _, _ in extras))
    return mixed, torch.mm(weights, biases)


def mix_kernel_(out: Tensor, weights: Sequence[float], dense: Tensor, dense_branch: Sequence[int],
                extras: Sequence[Tuple[Tensor, int, int]]) -> Tensor:
    """One sample's PD-B kernel written into ``out`` in place, without autograd: inference's ``mix_kernels``.

    ``weights`` are that sample's B branch weights as floats. On CPU the mixing only streams the stored
    kernels through memory, so it is written as scaled adds into a reused buffer: a fresh output per
    layer costs as much again in page faults, and a (1, S) x (S, M) matrix product runs below the
    memory bandwidth that these adds reach.
    """
    if dense.shape[0]:
        torch.mul(dense[0], weights[dense_branch[0]], out=out)
        for s in range(1, dense.shape[0]):
            out.add_(dense[s], alpha=weights[dense_branch[s]])
    else:
        out.zero_()
    for kernel, groups, branch in extras:
        _part_view(out, kernel.shape, groups).add_(_grouped(kernel, groups), alpha=weights[branch])
    return out


def per_sample_conv2d(x: Tensor, kernels: Tensor, biases: Tensor, stride: Sequence[int],
                      padding: Sequence[int], dilation: Sequence[int]) -> Tensor:
    """Convolve sample n of ``x`` with ``kernels[n]`` (plus ``biases[n]``): exact for every batch size.

    The batch is folded into the channel axis and run as one grouped convolution, so sample n only ever
    meets its own kernel. (For CPU inference ``PDConv2d`` calls this one sample at a time: oneDNN runs
    the grouped form up to 2x (batch 2) and 4x (batch 8) slower on layers with small feature maps.)
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


__all__: List[str] = [
    'check_foldable_bn', 'bn_scale_shift', 'fold_bn', 'add_kernel_', 'merge_parts', 'mix_kernels', 'mix_kernel_', 'kernel_workspace',
    'per_sample_conv2d'
]
