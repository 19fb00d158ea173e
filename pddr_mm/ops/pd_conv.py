"""PDConv2d: a convolution trained as parallel branches and deployed as one convolution."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.utils import _pair

from .fusion import add_kernel_, bn_scale_shift, combine_parts, kernel_workspace, merge_parts, per_sample_conv2d
from .refine import Refinement

IntOrPair = Union[int, Tuple[int, int]]
BRANCH_TYPES = ('standard', 'group', 'skeleton')
DEFAULT_BRANCHES = ('standard', 'standard', 'group', 'skeleton')
MODES = ('A', 'B')
FORWARD_PATHS = ('auto', 'branches', 'fused')
# the PDDR-only arguments of PDConv2d, which every PDDR module takes too; without them (and with the
# 'PD' prefix dropped from the type) a PDDR config becomes its plain counterpart
PD_ARGS = ('mode', 'branches', 'branch_groups', 'reduction', 'forward_path', 'deploy')


class ConvBN(nn.Module):
    """One bias-free conv and its BN; a smaller kernel is aligned with the centre of the full window.

    ``padding`` is the padding of the full kxk convolution. A kernel that is smaller along a dimension
    gets less padding there, so it samples the window's centre row/column (ACNet); where that would be
    negative, the input is cropped instead, which is the same thing.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Tuple[int, int],
                 full_kernel: Tuple[int, int], stride: Tuple[int, int], padding: Tuple[int, int],
                 dilation: Tuple[int, int], groups: int, norm_cfg: Dict) -> None:
        super().__init__()
        branch_pad, crop = [], []
        for k, kf, p, d in zip(kernel_size, full_kernel, padding, dilation):
            pad = p - d * ((kf - k) // 2)
            branch_pad.append(max(pad, 0))
            crop.append(max(-pad, 0))
        self.crop = tuple(crop)
        self.full_kernel = full_kernel
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, tuple(branch_pad), dilation,
                              groups=groups, bias=False)
        self.bn = build_norm_layer(norm_cfg, out_channels)[1]

    def forward(self, x: Tensor) -> Tensor:
        ch, cw = self.crop
        if ch or cw:
            x = x[..., ch:x.shape[-2] - ch, cw:x.shape[-1] - cw]
        return self.bn(self.conv(x))

    def parts(self) -> Tuple[List[Tuple[Tensor, Tensor, int]], Tensor]:
        """This branch as parts [(kernel, BN scale, groups)] and its BN shift (the BN must be in eval mode)."""
        scale, shift = bn_scale_shift(self.bn, self.conv.weight.dtype)
        return [(self.conv.weight, scale, self.conv.groups)], shift


class SkeletonBranch(nn.Module):
    """The asymmetric pair: a kx1 and a 1xk conv, each with its own BN, summed."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Tuple[int, int], **kwargs) -> None:
        super().__init__()
        kh, kw = kernel_size
        self.ver = ConvBN(in_channels, out_channels, (kh, 1), kernel_size, **kwargs)
        self.hor = ConvBN(in_channels, out_channels, (1, kw), kernel_size, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.ver(x).add_(self.hor(x))

    def parts(self) -> Tuple[List[Tuple[Tensor, Tensor, int]], Tensor]:
        ver_parts, ver_shift = self.ver.parts()
        hor_parts, hor_shift = self.hor.parts()
        return ver_parts + hor_parts, ver_shift + hor_shift


def _folded(parts: List[Tuple[Tensor, Tensor, int]]) -> List[Tuple[Tensor, int]]:
    """(kernel, BN scale, groups) parts as folded (kernel * scale, groups) parts."""
    return [(kernel * scale.reshape(-1, 1, 1, 1), groups) for kernel, scale, groups in parts]


def _check_norm_cfg(norm_cfg: Dict, num_features: int) -> None:
    if not isinstance(norm_cfg, dict) or 'type' not in norm_cfg:
        raise ValueError(f"norm_cfg must be a dict with a 'type', got {norm_cfg!r}")
    try:
        layer = build_norm_layer(norm_cfg, num_features)[1]
    except Exception as e:  # an unknown type, or arguments the layer does not take
        raise ValueError(f'norm_cfg {norm_cfg!r} cannot be built: {e}') from e
    if not isinstance(layer, _BatchNorm) or not layer.track_running_stats:
        raise ValueError(
            f"norm_cfg type {norm_cfg['type']!r} cannot be folded into a convolution: PDConv2d needs a "
            "BatchNorm with running statistics, norm_cfg type must be one of 'BN', 'BN2d' or 'SyncBN'")


@MODELS.register_module()
class PDConv2d(BaseModule):
    """A kxk convolution trained as parallel branches (PDDR) and fused into one for inference.

    Args:
        mode: 'A' sums the branch outputs; 'B' weights them per sample with softmax weights from a
            refinement module on the input.
        branches: any non-empty selection of 'standard' (may repeat), 'group' and 'skeleton'.
        branch_groups: groups of the 'group' branch; must divide both channel counts.
        norm_cfg: the branch BNs; only BatchNorm variants (BN, SyncBN) fold into a convolution.
        reduction: hidden width of the refinement module is ``in_channels // reduction``.
        forward_path: 'auto' runs one fused convolution whenever every branch BN is in eval mode
            (frozen, or the model in eval) and the branches otherwise; 'branches' and 'fused' force one
            path, for debugging. Both give the same outputs and gradients.
        deploy: build the fused form directly, to load a checkpoint written by ``switch_to_deploy``.

    ``groups`` must be 1 (PDDR replaces a dense convolution); ``bias=True`` adds a learnable bias after
    the branches, which folds into the fused bias.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: IntOrPair,
                 stride: IntOrPair = 1,
                 padding: IntOrPair = 0,
                 dilation: IntOrPair = 1,
                 groups: int = 1,
                 bias: Union[bool, str] = False,
                 mode: str = 'A',
                 branches: Sequence[str] = DEFAULT_BRANCHES,
                 branch_groups: int = 64,
                 norm_cfg: Optional[Dict] = None,
                 reduction: int = 16,
                 forward_path: str = 'auto',
                 deploy: bool = False,
                 init_cfg: Optional[Union[Dict, List[Dict]]] = None) -> None:
        if init_cfg is None:
            init_cfg = [dict(type='Kaiming', layer='Conv2d'), dict(type='Constant', val=1, bias=0, layer='_BatchNorm')]
        super().__init__(init_cfg)
        norm_cfg = dict(type='BN') if norm_cfg is None else norm_cfg
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self._validate(mode, branches, branch_groups, norm_cfg, reduction, forward_path, groups, bias)
        # attributes mmcv's ConvModule reads from its conv
        self.transposed, self.output_padding, self.groups = False, (0, 0), 1
        self.mode, self.branch_names = mode, tuple(branches)
        self.branch_groups, self.norm_cfg, self.forward_path = branch_groups, dict(norm_cfg), forward_path
        self.deployed = False

        self.refine = Refinement(in_channels, len(self.branch_names), reduction) if mode == 'B' else None
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias is True else None
        self.branches = nn.ModuleList(self._build_branch(name) for name in self.branch_names)
        if deploy:
            self._to_deploy_form()

    # ------------------------------------------------------------------ construction
    def _validate(self, mode, branches, branch_groups, norm_cfg, reduction, forward_path, groups, bias):
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
        if isinstance(branches, str) or not isinstance(branches, Sequence) or len(branches) == 0:
            raise ValueError(f'branches must be a non-empty sequence of names from {BRANCH_TYPES}, got {branches!r}')
        unknown = [b for b in branches if b not in BRANCH_TYPES]
        if unknown:
            raise ValueError(f'unknown branch name(s) {unknown} in branches: allowed values are {BRANCH_TYPES}')
        if mode == 'B' and len(branches) < 2:
            raise ValueError(f"mode='B' weights the branches per sample and needs at least two branches, got "
                             f"branches={tuple(branches)!r}; use mode='A' for a single branch")
        if any(k < 3 or k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f'kernel_size must be odd and >= 3, got {self.kernel_size}')
        if any(s < 1 for s in self.stride) or any(d < 1 for d in self.dilation):
            raise ValueError(f'stride and dilation must be >= 1, got stride={self.stride}, dilation={self.dilation}')
        if any(p < 0 for p in self.padding):
            raise ValueError(f'padding must be >= 0, got {self.padding}')
        if self.in_channels < 1 or self.out_channels < 1:
            raise ValueError(f'in_channels and out_channels must be >= 1, got {self.in_channels}, {self.out_channels}')
        if groups != 1:
            raise ValueError(f"groups must be 1 (PDDR replaces a dense convolution; the 'group' branch is "
                             f'configured by branch_groups), got {groups}')
        if bias not in (True, False, 'auto'):
            raise ValueError(f"bias must be True, False or 'auto', got {bias!r}")
        if 'group' in branches and (not isinstance(branch_groups, int) or branch_groups < 1
                                    or self.in_channels % branch_groups or self.out_channels % branch_groups):
            raise ValueError(
                f'branch_groups={branch_groups!r} must divide in_channels={self.in_channels} and '
                f"out_channels={self.out_channels} for the 'group' branch: choose a common divisor, or "
                "drop 'group' from branches")
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f'reduction must be an int >= 1, got {reduction!r}')
        if forward_path not in FORWARD_PATHS:
            raise ValueError(f'forward_path must be one of {FORWARD_PATHS}, got {forward_path!r}')
        _check_norm_cfg(norm_cfg, self.out_channels)

    def _build_branch(self, name: str) -> nn.Module:
        kwargs = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, norm_cfg=self.norm_cfg)
        if name == 'skeleton':
            return SkeletonBranch(self.in_channels, self.out_channels, self.kernel_size, groups=1, **kwargs)
        groups = self.branch_groups if name == 'group' else 1
        return ConvBN(self.in_channels, self.out_channels, self.kernel_size, self.kernel_size, groups=groups,
                      **kwargs)

    # ------------------------------------------------------------------ fusion
    def _part_specs(self) -> List[Tuple[int, int, Tuple[int, int]]]:
        """(branch index, groups, kernel size) of every folded part, in ``fold_branches`` order."""
        kh, kw = self.kernel_size
        specs = []
        for i, name in enumerate(self.branch_names):
            if name == 'skeleton':
                specs += [(i, 1, (kh, 1)), (i, 1, (1, kw))]
            else:
                specs.append((i, self.branch_groups if name == 'group' else 1, (kh, kw)))
        return specs

    def _deploy_layout(self) -> Tuple[List[int], List[Tuple[int, int]]]:
        """What a deployed PD-B layer stores: the branch of each dense kxk kernel, and (branch, groups) of
        each compact grouped kernel.

        A skeleton branch is stored as one dense kxk kernel (its kx1 and 1xk parts summed): mixing it per
        sample is then one pass over a dense kernel instead of two strided passes, which made the deployed
        forward up to 1.8x slower per late-stage layer on CPU.
        """
        dense = [i for i, name in enumerate(self.branch_names) if name != 'group']
        extra = [(i, self.branch_groups) for i, name in enumerate(self.branch_names) if name == 'group']
        return dense, extra

    def branch_parts(self) -> Tuple[List[Tuple[Tensor, Tensor, int]], Tensor]:
        """Every part as (kernel, scale of its BN, groups), and the folded bias of every branch (B, out).

        Differentiable: the frozen-BN training path runs on them. Needs every branch BN in eval mode.
        """
        parts, biases = [], []
        for branch in self.branches:
            branch_parts, bias = branch.parts()
            parts += branch_parts
            biases.append(bias)
        return parts, torch.stack(biases)

    def fold_branches(self) -> Tuple[List[Tuple[Tensor, int]], Tensor]:
        """Every branch folded with its BN: parts [(kernel, groups)] and biases (B, out)."""
        parts, biases = self.branch_parts()
        return _folded(parts), biases

    def branch_kernels(self) -> Tuple[Tensor, Tensor]:
        """Each branch as a dense full-size kernel (B, out, in, kh, kw) and bias (B, out), for inspection."""
        parts, biases = self.fold_branches()
        return self._dense_per_branch(parts, list(range(len(self.branch_names)))), biases

    def _dense_per_branch(self, parts: List[Tuple[Tensor, int]], branches: List[int]) -> Tensor:
        """The folded parts of each of ``branches`` summed into one dense kxk kernel: (len(branches), out, in,
        kh, kw)."""
        kernels = parts[0][0].new_zeros((len(branches), self.out_channels, self.in_channels) + self.kernel_size)
        for (kernel, groups), (branch, _, _) in zip(parts, self._part_specs()):
            if branch in branches:
                add_kernel_(kernels[branches.index(branch)], kernel, groups)
        return kernels

    def _bn_layers(self) -> List[_BatchNorm]:
        return [m for m in self.branches.modules() if isinstance(m, _BatchNorm)]

    def _use_fused_path(self) -> bool:
        if self.forward_path == 'branches':
            return False
        frozen = not any(bn.training for bn in self._bn_layers())
        if self.forward_path == 'fused' and not frozen:
            raise RuntimeError("forward_path='fused' needs every branch BN in eval mode (frozen): BN in "
                               "training mode normalises with batch statistics, which have no fixed fold")
        return frozen

    @torch.no_grad()
    def switch_to_deploy(self) -> bool:
        """Fuse the branches for inference, in place. Returns False if already fused (a no-op)."""
        if self.deployed:
            return False
        if self.training or any(bn.training for bn in self._bn_layers()):
            raise RuntimeError('PDConv2d is in training mode: train-mode BN has no fixed fold. '
                               'Call model.eval() before switch_to_deploy().')
        self._to_deploy_form(*self.branch_parts())
        return True

    def _to_deploy_form(self, parts: Optional[List[Tuple[Tensor, Tensor, int]]] = None,
                        biases: Optional[Tensor] = None) -> None:
        ref = next(self.branches.parameters())
        specs = self._part_specs()
        if parts is None:  # deploy=True at construction: shapes only, weights come from a checkpoint
            io = (self.out_channels, self.in_channels)
            parts = [(ref.new_zeros((io[0], io[1] // g) + size), ref.new_ones(io[0]), g) for _, g, size in specs]
            biases = ref.new_zeros((len(self.branch_names), self.out_channels))
        if self.mode == 'A':
            self.fused_conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                                        self.padding, self.dilation, bias=True).to(ref)
            bias = biases.sum(0) if self.bias is None else biases.sum(0) + self.bias
            self.fused_conv.weight.copy_(merge_parts(parts, self.in_channels, self.kernel_size))
            self.fused_conv.bias.copy_(bias)
            self.bias = None
        else:
            dense_branch, extra_specs = self._deploy_layout()
            extra_branches = [i for i, _ in extra_specs]
            parts = _folded(parts)
            self.fused_weight = nn.Parameter(self._dense_per_branch(parts, dense_branch))
            # a grouped branch is one part, kept in its compact shape
            self.fused_extra = nn.ParameterList([nn.Parameter(kernel.clone()) for (kernel, _), (branch, _, _)
                                                 in zip(parts, specs) if branch in extra_branches])
            self.fused_bias = nn.Parameter(biases.clone())
        del self.branches
        self.deployed = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # a training checkpoint in a deploy model (or the reverse) would otherwise half-load silently
        keys = [k[len(prefix):] for k in state_dict if k.startswith(prefix)]
        has_branches = any(k.startswith('branches.') for k in keys)
        has_fused = any(k.startswith(('fused_conv.', 'fused_weight', 'fused_extra.', 'fused_bias')) for k in keys)
        where = prefix[:-1] or 'PDConv2d'
        if self.deployed and has_branches and not has_fused:
            raise RuntimeError(
                f'{where}: the model is built in deploy (fused) form but the checkpoint holds training '
                'branches. Convert the checkpoint first: python tools/deploy.py CONFIG CHECKPOINT, then use '
                'the deploy config and checkpoint it writes (or build the model without deploy=True).')
        if not self.deployed and has_fused and not has_branches:
            raise RuntimeError(
                f'{where}: the checkpoint holds fused (deploy) weights but the model is built with training '
                'branches. Use the deploy config written by tools/deploy.py (deploy=True); fused weights '
                'cannot be split back into branches.')
        if not self.deployed and not has_branches and 'weight' in keys:
            raise RuntimeError(
                f'{where}: the checkpoint holds a plain convolution here. Start a PDDR model from plain '
                "weights with init_cfg=dict(type='Pretrained', checkpoint=...) on the backbone, or convert "
                'the checkpoint with tools/model_converters/plain_to_pd.py.')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        if self.deployed:
            if self.mode == 'A':
                return self.fused_conv(x)
            dense_branch, extra_specs = self._deploy_layout()
            parts = [(k, None, 1, b) for k, b in zip(self.fused_weight, dense_branch)]
            parts += [(k, None, g, b) for k, (b, g) in zip(self.fused_extra, extra_specs)]
            return self._mixed_conv(x, parts, self.fused_bias)
        if self._use_fused_path():
            parts, biases = self.branch_parts()
            if self.mode == 'A':
                bias = biases.sum(0) if self.bias is None else biases.sum(0) + self.bias
                kernel = merge_parts(parts, self.in_channels, self.kernel_size)
                return F.conv2d(x, kernel, bias, self.stride, self.padding, self.dilation)
            parts = [(k, s, g, b) for (k, s, g), (b, _, _) in zip(parts, self._part_specs())]
            return self._mixed_conv(x, parts, biases)
        # sums in place: a fresh activation-sized tensor per add costs its page faults on CPU, and no
        # branch output is saved for backward by the op that made it (conv + BN save their inputs)
        outs = [branch(x) for branch in self.branches]
        if self.mode == 'A':
            out = outs[0]
            for o in outs[1:]:
                out = out.add_(o)
        else:
            weights = self.refine(x)
            out = outs[0] * weights[:, 0].reshape(-1, 1, 1, 1)
            for i, o in enumerate(outs[1:], 1):
                out = out.addcmul_(o, weights[:, i].reshape(-1, 1, 1, 1))
        return out if self.bias is None else out.add_(self.bias.reshape(1, -1, 1, 1))

    def _mixed_conv(self, x: Tensor, parts: List[Tuple[Tensor, Optional[Tensor], int, int]], biases: Tensor) -> Tensor:
        """PD-B with fixed branch kernels: one kernel and bias per sample.

        ``parts`` are (kernel, scale of its BN or None once folded, groups, branch); ``biases`` (B, out).
        """
        weights = self.refine(x)
        bias = self._sample_bias(torch.mm(weights, biases))
        groups = [g for _, _, g, _ in parts]
        if not x.is_cuda and not torch.is_grad_enabled() and not torch.jit.is_tracing():
            # CPU inference: mix each sample's kernel into one reused buffer and convolve that sample.
            # oneDNN runs the grouped form below up to 2x (batch 2) to 4x (batch 8) slower on small
            # feature maps, the kernels of a whole batch are tens of MB in late stages, and a fresh
            # kernel per layer costs as much again in page faults. The sample's branch weights are
            # numbers here, which spares building per-channel coefficient tensors for every sample.
            # (Not when traced, as mmengine's FLOP counter does: the loop would make the trace
            # batch-sized.)
            folded = [k if s is None else k * s.reshape(-1, 1, 1, 1) for k, s, _, _ in parts]
            buf = kernel_workspace((1, self.out_channels, self.in_channels) + self.kernel_size, x)
            outs = []
            for i, w in enumerate(weights.tolist()):
                kernel = combine_parts(folded, [w[b] for _, _, _, b in parts], groups, self.in_channels,
                                       self.kernel_size, out=buf)[0]
                outs.append(F.conv2d(x[i:i + 1], kernel, bias[i], self.stride, self.padding, self.dilation))
            return outs[0] if len(outs) == 1 else torch.cat(outs)
        ones = biases.new_ones(self.out_channels)
        # part p of sample n, output channel o: weights[n, branch] * scale[o] (a deployed part has no scale)
        coefs = [weights[:, b].unsqueeze(1) * (ones if s is None else s).unsqueeze(0) for _, s, _, b in parts]
        mixed = combine_parts([k for k, _, _, _ in parts], coefs, groups, self.in_channels, self.kernel_size)
        return per_sample_conv2d(x, mixed, bias, self.stride, self.padding, self.dilation)

    def _sample_bias(self, bias: Tensor) -> Tensor:
        return bias if self.bias is None else bias + self.bias

    def extra_repr(self) -> str:
        s = (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, '
             f'padding={self.padding}, dilation={self.dilation}, mode={self.mode!r}')
        return s + (', deployed' if self.deployed else f', branches={self.branch_names}')
