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

from .fusion import add_kernel_, bn_scales_shifts, combine_parts, merge_kernels, mixed_conv2d, per_sample_conv2d
from .refine import Refinement

IntOrPair = Union[int, Tuple[int, int]]
# every part's kernel and groups, the scales of their BNs (P, out), each branch's folded bias (B, out)
Parts = Tuple[List[Tensor], List[int], Tensor, Tensor]
BRANCH_TYPES = ('standard', 'group', 'skeleton')
DEFAULT_BRANCHES = ('standard', 'standard', 'group', 'skeleton')
MODES = ('A', 'B')
# CPU inference of PD-B mixes as many samples' kernels per pass over the stored kernels as fit in this
# many bytes (at least one sample). Batch 8, fused/plain: ResNet-18 1.62 with one sample per pass, 1.49
# with 24 MB, 1.39 with all eight; ResNet-50 1.26 -> 1.19 (one sample, 128 MB).
MIX_BUFFER_BYTES = 128 << 20
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

    def conv_bns(self) -> List[Tuple[nn.Conv2d, _BatchNorm]]:
        """This branch's parts: (conv, the BN after it)."""
        return [(self.conv, self.bn)]


class SkeletonBranch(nn.Module):
    """The asymmetric pair: a kx1 and a 1xk conv, each with its own BN, summed."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Tuple[int, int], **kwargs) -> None:
        super().__init__()
        kh, kw = kernel_size
        self.ver = ConvBN(in_channels, out_channels, (kh, 1), kernel_size, **kwargs)
        self.hor = ConvBN(in_channels, out_channels, (1, kw), kernel_size, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.ver(x).add_(self.hor(x))

    def conv_bns(self) -> List[Tuple[nn.Conv2d, _BatchNorm]]:
        return self.ver.conv_bns() + self.hor.conv_bns()


def _folded(kernels: List[Tensor], scales: Tensor) -> List[Tensor]:
    """Every part's kernel times the scale of its BN."""
    return [kernel * scale.reshape(-1, 1, 1, 1) for kernel, scale in zip(kernels, scales)]


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

    def branch_parts(self) -> Parts:
        """Every part's kernel and groups, the scales of their BNs (P, out) and the folded bias of every
        branch (B, out), in ``_part_specs`` order.

        Differentiable: the frozen-BN training path runs on them. Needs every branch BN in eval mode.
        """
        pairs = [pair for branch in self.branches for pair in branch.conv_bns()]
        convs = [conv for conv, _ in pairs]
        scales, shifts = bn_scales_shifts([bn for _, bn in pairs], convs[0].weight.dtype)
        biases = shifts
        if len(pairs) > len(self.branches):  # a skeleton branch is two parts: their shifts add up
            index = torch.tensor([b for b, _, _ in self._part_specs()], device=shifts.device)
            biases = shifts.new_zeros(len(self.branches), shifts.shape[1]).index_add(0, index, shifts)
        return [conv.weight for conv in convs], [conv.groups for conv in convs], scales, biases

    def fold_branches(self) -> Tuple[List[Tuple[Tensor, int]], Tensor]:
        """Every branch folded with its BN: parts [(kernel, groups)] and biases (B, out)."""
        kernels, groups, scales, biases = self.branch_parts()
        return list(zip(_folded(kernels, scales), groups)), biases

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
        self._to_deploy_form(self.branch_parts())
        return True

    def _to_deploy_form(self, parts: Optional[Parts] = None) -> None:
        ref = next(self.branches.parameters())
        specs = self._part_specs()
        if parts is None:  # deploy=True at construction: shapes only, weights come from a checkpoint
            io = (self.out_channels, self.in_channels)
            parts = ([ref.new_zeros((io[0], io[1] // g) + size) for _, g, size in specs], [g for _, g, _ in specs],
                     ref.new_ones((len(specs), io[0])), ref.new_zeros((len(self.branch_names), io[0])))
        kernels, groups, scales, biases = parts
        if self.mode == 'A':
            self.fused_conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                                        self.padding, self.dilation, bias=True).to(ref)
            bias = biases.sum(0) if self.bias is None else biases.sum(0) + self.bias
            self.fused_conv.weight.copy_(merge_kernels(kernels, groups, scales, self.in_channels, self.kernel_size))
            self.fused_conv.bias.copy_(bias)
            self.bias = None
        else:
            dense_branch, extra_specs = self._deploy_layout()
            extra_branches = [i for i, _ in extra_specs]
            folded = list(zip(_folded(kernels, scales), groups))
            # the dense kernels of the branches in _deploy_layout() order, stacked along the output axis:
            # (B * out, in, kh, kw), 4-D so that model.to(memory_format=torch.channels_last) can convert it
            self.fused_weight = nn.Parameter(self._dense_per_branch(folded, dense_branch).flatten(0, 1))
            # a grouped branch is one part, kept in its compact shape
            self.fused_extra = nn.ParameterList([nn.Parameter(kernel.clone()) for (kernel, _), (branch, _, _)
                                                 in zip(folded, specs) if branch in extra_branches])
            self.fused_bias = nn.Parameter(biases.clone())
            # groups and branch of every stored kernel, in the order forward passes them
            self._mix_layout = ([1] * len(dense_branch) + [g for _, g in extra_specs],
                                dense_branch + [b for b, _ in extra_specs])
        del self.branches
        self.deployed = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # a training checkpoint in a deploy model (or the reverse) would otherwise half-load silently
        keys = [k[len(prefix):] for k in state_dict if k.startswith(prefix)]
        has_branches = any(k.startswith('branches.') for k in keys)
        has_fused = any(k.startswith(('fused_conv.', 'fused_weight', 'fused_extra.', 'fused_bias')) for k in keys)
        where = prefix[:-1] or 'PDConv2d'
        stacked = state_dict.get(prefix + 'fused_weight')
        if self.deployed and self.mode == 'B' and stacked is not None and stacked.dim() == 5:
            # deploy checkpoints written before the kernels were stored 4-D: (B, out, in, kh, kw)
            state_dict[prefix + 'fused_weight'] = stacked.flatten(0, 1)
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
            groups, branches = self._mix_layout
            return self._mixed_conv(x, self._stored_kernels(), groups, branches, None,
                                    self.fused_bias)
        if self._use_fused_path():
            kernels, groups, scales, biases = self.branch_parts()
            if self.mode == 'A':
                bias = biases.sum(0) if self.bias is None else biases.sum(0) + self.bias
                kernel = merge_kernels(kernels, groups, scales, self.in_channels, self.kernel_size)
                return F.conv2d(x, kernel, bias, self.stride, self.padding, self.dilation)
            return self._mixed_conv(x, kernels, groups, [b for b, _, _ in self._part_specs()], scales, biases)
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

    def _mixed_conv(self, x: Tensor, kernels: List[Tensor], groups: List[int], branches: List[int],
                    scales: Optional[Tensor], biases: Tensor) -> Tensor:
        """PD-B with fixed branch kernels: one kernel and bias per sample.

        Part p is ``kernels[p]`` (grouped ``groups[p]``) of branch ``branches[p]``, times its BN scale
        ``scales[p]`` (None once folded); ``biases`` (B, out).
        """
        weights = self.refine(x)
        if not x.is_cuda and not torch.is_grad_enabled() and not torch.jit.is_tracing():
            # CPU inference: each sample convolved with its own kernel (not when traced, as mmengine's FLOP
            # counter does: the loop would make the trace batch-sized)
            folded = kernels if scales is None else _folded(kernels, scales)
            return mixed_conv2d(x, weights, folded, groups, branches, biases, self.bias, self.kernel_size,
                                self.stride, self.padding, self.dilation, MIX_BUFFER_BYTES)
        bias = self._sample_bias(torch.mm(weights, biases))
        mixed = combine_parts(kernels, self._part_coefs(weights, branches, scales), groups, self.in_channels,
                              self.kernel_size)
        return per_sample_conv2d(x, mixed, bias, self.stride, self.padding, self.dilation)

    @torch.no_grad()
    def sample_kernels(self, weights: Tensor, out: Optional[Tensor] = None) -> Tensor:
        """A deployed PD-B layer's per-sample kernels (N, out, in, kh, kw) for branch weights (N, B), mixed as
        its forward mixes them: to inspect them, or to time the mixing on its own (``tools/benchmark.py``).
        ``out``: a contiguous buffer of that shape to write them into."""
        return combine_parts(*self.mixing_args(weights), out=out)

    def mixing_args(self, weights: Tensor) -> Tuple[List[Tensor], Tensor, List[int], int, Tuple[int, int]]:
        """The ``combine_parts`` arguments (kernels, coefficients, groups, in_channels, kernel_size) that give
        ``sample_kernels(weights)``."""
        if not (self.deployed and self.mode == 'B'):
            raise RuntimeError('sample_kernels needs a deployed PD-B layer (mode B, after switch_to_deploy())')
        if weights.dim() != 2 or weights.shape[1] != len(self.branch_names):
            raise ValueError(f'weights must be (N, {len(self.branch_names)}), got {tuple(weights.shape)}')
        groups, branches = self._mix_layout
        coefs = self._part_coefs(weights, branches)
        return self._stored_kernels(), coefs, list(groups), self.in_channels, self.kernel_size

    def _part_coefs(self, weights: Tensor, branches: List[int], scales: Optional[Tensor] = None) -> Tensor:
        """(P, N, out) mixing coefficients: part p of sample n, output channel o gets weights[n, branches[p]]
        times scales[p, o], the BN scale of the part (None once folded: a deployed part has no scale)."""
        part_weights = weights.index_select(1, torch.tensor(branches, device=weights.device)).t().unsqueeze(-1)
        return part_weights.expand(-1, -1, self.out_channels) if scales is None else part_weights * scales.unsqueeze(1)

    def _stored_kernels(self) -> List[Tensor]:
        """A deployed PD-B layer's kernels, (out, in / groups, kh, kw) each, in ``_mix_layout`` order."""
        return [*self.fused_weight.split(self.out_channels), *self.fused_extra]

    def _sample_bias(self, bias: Tensor) -> Tensor:
        return bias if self.bias is None else bias + self.bias

    def extra_repr(self) -> str:
        s = (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, '
             f'padding={self.padding}, dilation={self.dilation}, mode={self.mode!r}')
        return s + (', deployed' if self.deployed else f', branches={self.branch_names}')
