"""The fusion math of PDDR, in one place.

Every PDDR module (the convolution, and through it the backbones, necks and heads) fuses with these
functions only. They are plain differentiable tensor functions: the deploy path calls them once under
``torch.no_grad()``, the frozen-BN training path calls them on every forward so that gradients reach
the branch parameters exactly as through the branch-by-branch computation.

A branch contributes one or more *parts*: a conv kernel, the groups it was convolved with and the
per-channel scale of the BN after it. A part smaller than the full window (the kx1 and 1xk skeleton
kernels) belongs on the window's centre, and a grouped part on the block diagonal of the dense kernel.
``combine_parts`` writes coefficient x part into exactly those entries (zero-padding and group-to-dense
without materialising either), for a whole batch at once: the PD-A kernel (N = 1, the BN scales as
coefficients), PD-B's per-sample kernels in training (BN scale x the sample's branch weight) and those of
a deployed PD-B layer (the branch weights). CPU inference (``mixed_conv2d``) mixes a few samples at a
time into a reused buffer (``kernel_workspace``) and convolves each sample with its own kernel. On CPU
these run as C++ (``csrc/combine.cpp``, see ``cpu_ext``) that passes over memory once; the torch-op form
below is the same computation, used on CUDA, for other dtypes and where the op cannot be built.
"""
import math
import threading
from types import ModuleType
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from .cpu_ext import cpu_ext

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
    scales, shifts = bn_scales_shifts([bn], dtype)
    return scales[0], shifts[0]


def bn_scales_shifts(bns: Sequence[_BatchNorm], dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """``bn_scale_shift`` of several eval-mode BNs of one width: (len(bns), C) scales and shifts.

    A PDDR layer has five branch BNs; computed one by one, their small ops (forward and backward) were
    half the fixed cost of a layer in frozen-BN training on CPU. Here they are a few ops on stacked rows.
    """
    for bn in bns:
        check_foldable_bn(bn)
    with torch.no_grad():  # the statistics are buffers: no gradient
        var = torch.stack([bn.running_var for bn in bns]).to(dtype)
        eps = var.new_tensor([bn.eps for bn in bns]).unsqueeze(1)
        inv_std = (var + eps).rsqrt_()
        mean_inv_std = torch.stack([bn.running_mean for bn in bns]).to(dtype).mul_(inv_std)
    ones, zeros = inv_std.new_ones(inv_std.shape[1]), inv_std.new_zeros(inv_std.shape[1])
    weight = torch.stack([bn.weight if bn.affine else ones for bn in bns])
    bias = torch.stack([bn.bias if bn.affine else zeros for bn in bns])
    return weight * inv_std, torch.addcmul(bias, weight, mean_inv_std, value=-1)


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


Coef = Union[Tensor, float]  # (N, out) per sample and output channel, or one number for the whole part


def _coef_view(coef: Tensor, groups: int) -> Tensor:
    """(N, out) coefficients that broadcast against the part view of (N, out, in, kh, kw) kernels."""
    coef = coef.reshape(coef.shape[0], -1, 1, 1, 1)
    return coef.unflatten(1, (groups, -1)) if groups > 1 else coef


def use_cpu_ext(tensors: Sequence[Tensor]) -> Optional[ModuleType]:
    """The C++ op module if it can take ``tensors`` (CPU, float32/float64, not traced), else None."""
    # a trace (torch.jit.trace, mmengine's FLOP counter) does not see inside the C++ op: it would record
    # the empty output tensor and never the values written into it
    if torch.jit.is_tracing() or any(t.is_cuda or t.dtype not in (torch.float32, torch.float64) for t in tensors):
        return None
    return cpu_ext()


def _coef_tensors(coefs: Sequence[Coef], like: Tensor) -> List[Tensor]:
    """Every coefficient as an (N, out) tensor; a number stands for all of a part's output channels."""
    return [c if isinstance(c, Tensor) else torch.full((1, like.shape[0]), float(c), dtype=like.dtype) for c in coefs]


def _combine(kernels: Sequence[Tensor], coefs: Sequence[Coef], groups: Sequence[int], in_channels: int,
             kernel_size: Tuple[int, int], out: Optional[Tensor] = None) -> Tensor:
    n = coefs[0].shape[0] if isinstance(coefs[0], Tensor) else 1
    ext = use_cpu_ext(kernels)
    if ext is not None and (out is None or out.is_contiguous()):
        shape = (n, kernels[0].shape[0], in_channels) + tuple(kernel_size)
        out = ext.empty(list(shape), kernels[0]) if out is None else out
        ext.combine_forward(out, [k.contiguous() for k in kernels], _coef_tensors(coefs, kernels[0]), list(groups))
        return out
    full = [i for i, (k, g) in enumerate(zip(kernels, groups)) if g == 1 and tuple(k.shape[-2:]) == tuple(kernel_size)]
    if full:
        first = full[0]
        coef = coefs[first]
        mixed = torch.mul(kernels[first].unsqueeze(0), _coef_view(coef, 1) if isinstance(coef, Tensor) else coef,
                          out=out)
    else:
        first = None
        shape = (n, kernels[0].shape[0], in_channels) + tuple(kernel_size)
        mixed = kernels[0].new_zeros(shape) if out is None else out.zero_()
    for i, (kernel, coef, g) in enumerate(zip(kernels, coefs, groups)):
        if i == first:
            continue
        target, part = _part_view(mixed, kernel.shape, g), _grouped(kernel, g).unsqueeze(0)
        if isinstance(coef, Tensor):
            target.addcmul_(part, _coef_view(coef, g))
        else:  # a number: no per-channel tensor to broadcast (N = 1)
            target.add_(part, alpha=coef)
    return mixed


def _batch_weighted_sum(view: Tensor, coef: Tensor, by_sample: bool) -> Tensor:
    """``sum_n view[n] * coef[n]``: on CPU sample by sample (no N-fold temporary), on CUDA in one op."""
    if not by_sample:
        return (view * coef).sum(0)
    out = torch.mul(view[0], coef[0])
    for n in range(1, view.shape[0]):
        out.addcmul_(view[n], coef[n])
    return out


class _Combine(torch.autograd.Function):
    """``combine_parts`` with a hand-written backward; the coefficients come stacked, (P, N, out).

    It reads the gradient through views of each part's entries and forms the coefficient gradients in
    reused scratch memory. Written with autograd ops (fold, then add or mix) the same step also wrote
    every folded kernel, copies of the gradient's strided views and fresh products for the scale
    gradients, each a kernel-sized tensor whose page faults cost more than its arithmetic on CPU.
    """

    @staticmethod
    def forward(ctx, in_channels: int, kernel_size: Tuple[int, int], groups: Tuple[int, ...], coefs: Tensor,
                *kernels: Tensor):
        ctx.groups = groups
        ctx.save_for_backward(coefs, *kernels)
        return _combine(kernels, coefs.unbind(0), groups, in_channels, kernel_size)

    @staticmethod
    def backward(ctx, grad: Tensor):
        coefs, *kernels = ctx.saved_tensors
        want_coefs, want_kernels = ctx.needs_input_grad[3], ctx.needs_input_grad[4:]
        ext = use_cpu_ext([grad])
        if ext is not None:
            grad_kernels, grad_coefs = ext.combine_backward(
                grad.contiguous(), [k.contiguous() for k in kernels], list(coefs.unbind(0)), list(ctx.groups),
                list(want_kernels), [want_coefs] * len(kernels))
            return (None, None, None, torch.stack(grad_coefs) if want_coefs else None, *grad_kernels)
        grad_kernels, grad_coefs = [], []
        for kernel, coef, g, want_kernel in zip(kernels, coefs, ctx.groups, want_kernels):
            view = _part_view(grad, kernel.shape, g)  # (N, ...) laid out like _grouped(kernel)
            c = _coef_view(coef, g)
            grad_kernel = None
            if want_kernel:
                grad_kernel = _batch_weighted_sum(view, c, by_sample=not grad.is_cuda).reshape(kernel.shape)
            if want_coefs:
                # per (sample, channel) dot products; bmm ran 4x slower on CPU than a product into scratch
                prod = kernel_workspace(view.shape, grad, slot='combine_backward')
                torch.mul(view, _grouped(kernel, g).unsqueeze(0), out=prod)
                grad_coefs.append(prod.flatten(-3).sum(-1).reshape(coef.shape))
            grad_kernels.append(grad_kernel)
        return (None, None, None, torch.stack(grad_coefs) if want_coefs else None, *grad_kernels)


def combine_parts(kernels: Sequence[Tensor], coefs: Union[Tensor, Sequence[Coef]], groups: Sequence[int],
                  in_channels: int, kernel_size: Tuple[int, int], out: Optional[Tensor] = None) -> Tensor:
    """``sum_p coefs_p[n, o] * kernels_p[o]`` for every n, each part centred and block-diagonal in dense
    (N, out, in, kh, kw) kernels: the one computation behind every PDDR kernel.

    PD-A is N = 1 with a part's coefficients the scale of its BN; PD-B multiplies those by the sample's
    weight of the part's branch; a deployed PD-B layer combines its stored kernels with the weights alone.
    No folded kernel is materialised. Differentiable in kernels and coefficients. ``coefs`` is one (N, out)
    tensor per part, or all of them stacked, (P, N, out), which spares autograd an op per part. Without
    autograd the kernels can be written into ``out`` (N, out, in, kh, kw), e.g. a reused buffer, and a
    part's coefficient may be one number (N = 1).
    """
    groups = tuple(groups)
    if len(coefs) != len(kernels) or len(groups) != len(kernels):
        raise ValueError(f'combine_parts needs one coefficient and one groups entry per part: {len(kernels)} '
                         f'parts, {len(coefs)} coefficients, {len(groups)} groups')
    tensors = list(kernels) + ([coefs] if isinstance(coefs, Tensor) else [c for c in coefs if isinstance(c, Tensor)])
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        if out is not None:
            raise ValueError('combine_parts cannot write into out= while autograd records it')
        if not isinstance(coefs, Tensor):
            if len(tensors) != 2 * len(kernels):
                raise ValueError('with autograd, every coefficient of combine_parts must be a tensor')
            coefs = torch.stack(list(coefs))
        return _Combine.apply(in_channels, tuple(kernel_size), groups, coefs, *kernels)
    return _combine(kernels, coefs.unbind(0) if isinstance(coefs, Tensor) else coefs, groups, in_channels,
                    kernel_size, out)


def merge_kernels(kernels: Sequence[Tensor], groups: Sequence[int], scales: Tensor, in_channels: int,
                  kernel_size: Tuple[int, int]) -> Tensor:
    """The PD-A kernel: ``sum_p kernels_p * scales[p]`` as one dense (out, in, kh, kw) kernel, BNs folded in;
    ``scales`` (P, out) stacked, as ``bn_scales_shifts`` gives them."""
    # squeeze, not [0]: the backward of a select writes a zero kernel and copies the gradient into it
    return combine_parts(kernels, scales.unsqueeze(1), groups, in_channels, kernel_size).squeeze(0)


def merge_parts(parts: Sequence[ScaledPart], in_channels: int, kernel_size: Tuple[int, int]) -> Tensor:
    """``merge_kernels`` for parts given as (kernel, scale, groups)."""
    return merge_kernels([k for k, _, _ in parts], [g for _, _, g in parts], torch.stack([s for _, s, _ in parts]),
                         in_channels, kernel_size)


def samples_per_pass(n: int, kernel_shape: Sequence[int], itemsize: int, buffer_bytes: int) -> int:
    """How many of n samples' kernels ``mixed_conv2d`` mixes per pass over the stored kernels (at least one)."""
    return max(1, min(n, buffer_bytes // (itemsize * math.prod(kernel_shape))))


def mixed_conv2d(x: Tensor, weights: Tensor, kernels: Sequence[Tensor], groups: Sequence[int],
                 branches: Sequence[int], biases: Tensor, bias: Optional[Tensor], kernel_size: Tuple[int, int],
                 stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], buffer_bytes: int) -> Tensor:
    """PD-B inference without autograd: sample n convolved with its own kernel, ``sum_p weights[n,
    branches[p]] * kernels[p]`` (combined as in ``combine_parts``), plus ``weights[n] @ biases`` (+ ``bias``).

    oneDNN runs the grouped form of ``per_sample_conv2d`` up to 2x (batch 2) to 4x (batch 8) slower on
    small feature maps, so each sample is convolved on its own. The kernels of as many samples as fit in
    ``buffer_bytes`` (at least one) are mixed per pass over the stored kernels, into a reused buffer: the
    stored kernels are tens of MB in late stages and are read once per pass, and a fresh kernel per layer
    costs as much again in page faults. On CPU the whole layer is one C++ call.
    """
    n, in_channels = x.shape[:2]
    shape = (kernels[0].shape[0], in_channels) + tuple(kernel_size)
    chunk = samples_per_pass(n, shape, x.element_size(), buffer_bytes)
    buf = kernel_workspace((chunk, ) + shape, x)
    ext = use_cpu_ext([x, weights, biases, *kernels])
    if ext is not None:
        return ext.mixed_conv(x, weights.contiguous(), list(kernels), list(groups), list(branches),
                              biases.contiguous(), bias, buf, list(stride), list(padding), list(dilation))
    sample_bias = torch.mm(weights, biases) if bias is None else torch.addmm(bias, weights, biases)
    sample_weights = weights.tolist()  # a few numbers: cheaper than indexing tensors at batch 1
    outs = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        coefs = torch.tensor([[w[b] for w in sample_weights[start:stop]] for b in branches], dtype=x.dtype)
        mixed = _combine(kernels, coefs.unsqueeze(-1).expand(-1, -1, shape[0]).unbind(0), groups, in_channels,
                         kernel_size, out=buf[:stop - start])
        outs += [F.conv2d(x[i:i + 1], mixed[i - start], sample_bias[i], stride, padding, dilation)
                 for i in range(start, stop)]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def per_sample_conv2d(x: Tensor, kernels: Tensor, biases: Tensor, stride: Sequence[int],
                      padding: Sequence[int], dilation: Sequence[int]) -> Tensor:
    """Convolve sample n of ``x`` with ``kernels[n]`` (plus ``biases[n]``): exact for every batch size.

    The batch is folded into the channel axis and run as one grouped convolution, so sample n only ever
    meets its own kernel. (``PDConv2d``'s CPU inference convolves one sample at a time instead: oneDNN
    runs the grouped form up to 2x (batch 2) and 4x (batch 8) slower on layers with small feature maps:
    see ``mixed_conv2d``.)
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
    'check_foldable_bn', 'bn_scale_shift', 'bn_scales_shifts', 'fold_bn', 'add_kernel_', 'combine_parts',
    'merge_kernels', 'merge_parts',
    'kernel_workspace', 'mixed_conv2d', 'per_sample_conv2d', 'samples_per_pass', 'use_cpu_ext'
]
