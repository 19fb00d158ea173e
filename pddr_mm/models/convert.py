"""Turn the conv + BN pairs of any network into PDConv2d, found from one traced forward.

A PDDR layer stands for a convolution whose output feeds only a BatchNorm: its branch BNs take that
BN's place. Which convolutions those are is read from the network itself, not from a list per
architecture: one forward (training mode, autograd on) on a copy of the network records every
convolution's output tensor and every module's input tensor (:func:`pddr_mm.surgery.trace_conv_consumers`,
which RPG shares). A pair is (conv, BN) where

* the BN's input *is* the conv's output (the same tensor object, not modified in place in between),
* both are called exactly once, and
* in the autograd graph the conv's output node has exactly one consumer (the BN): no residual,
  concatenation, view or returned feature reads the un-normalised output.

:func:`convert_to_pd` then replaces every selected conv by a PDConv2d with the same geometry (stride,
padding, dilation, groups) and the BN by ``nn.Identity``, so module names, ``out_indices``,
``frozen_stages``, ``norm_eval`` and ``with_cp`` of the network are untouched. A load_state_dict
pre-hook maps a plain checkpoint's conv + BN keys to the PDConv2d's (``plain_to_pd_layer``): a plain
``init_cfg=dict(type='Pretrained')``, ``load_from`` or ``load_state_dict`` starts the converted network
function-preserving in eval mode.
"""
from collections import Counter, defaultdict
from typing import Dict, Optional, Sequence, Tuple, Union

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model.weight_init import initialize
from mmengine.registry import MODELS
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ..ops import PDArgs, PDConv2d, filter_branches
from ..ops.branches import same_padding
from ..surgery import check_selection, conv_kind, excluded_by_name, trace_conv_consumers
from ..utils import set_module
from .plain_to_pd import plain_to_pd_layer

KernelSizes = Optional[Sequence[Union[int, Tuple[int, int]]]]

# BN classes whose forward is the plain batch norm (what a PDConv2d's branch BNs compute), with their mmcv
# norm_cfg type: torch's, the ones mmengine registers as 'BN' / 'SyncBN', and mmengine's _BatchNormXd
# (what revert_sync_batchnorm turns SyncBN into)
_FOLDABLE_NORMS = {nn.BatchNorm2d: 'BN', nn.SyncBatchNorm: 'SyncBN'}
try:
    from mmengine.model.utils import _BatchNormXd
    _FOLDABLE_NORMS[_BatchNormXd] = 'BN'
except ImportError:  # older mmengine
    pass


# --------------------------------------------------------------------------------------------- convert
def _kernel_selected(kernel_size: Tuple[int, int], kernel_sizes: KernelSizes) -> bool:
    if kernel_sizes is None:  # the default: 3x3 and larger
        return min(kernel_size) >= 3
    wanted = {(k, k) if isinstance(k, int) else tuple(k) for k in kernel_sizes}
    return tuple(kernel_size) in wanted


def _norm_cfg(bn: _BatchNorm) -> Optional[Dict]:
    """The mmcv norm_cfg that builds ``bn``'s kind of BN, or None if it cannot become branch BNs."""
    foldable = dict(_FOLDABLE_NORMS)
    for name in ('BN', 'SyncBN'):
        cls = MODELS.get(name)
        if cls is not None:
            foldable.setdefault(cls, name)
    norm_type = foldable.get(type(bn))
    if norm_type is None or not bn.affine or not bn.track_running_stats:
        return None
    return dict(type=norm_type, eps=bn.eps, momentum=bn.momentum)


def _padding(conv: nn.Conv2d) -> Optional[Tuple[int, int]]:
    if isinstance(conv.padding, str):  # 'valid' or 'same' (stride 1)
        return (0, 0) if conv.padding == 'valid' else same_padding(conv.kernel_size, conv.dilation)
    return tuple(conv.padding)


def convert_to_pd(model: nn.Module,
                  inputs: Tensor,
                  kernel_sizes: KernelSizes = None,
                  include: Optional[Sequence[str]] = None,
                  exclude: Optional[Sequence[str]] = None,
                  log: bool = True,
                  **pd_args) -> Dict:
    """Replace, in place, every selected conv + BN pair of ``model`` by a PDConv2d; returns a report.

    Args:
        inputs: a small batch the model accepts (batch >= 2: the traced forward runs BNs in training mode).
        kernel_sizes: kernel sizes to convert (ints k for kxk, or (kh, kw)); None: 3x3 and larger.
        include / exclude: regular expressions searched in the conv's module name; with ``include`` only
            matching convs are converted, ``exclude`` leaves matching convs plain.
        pd_args: the PDDR arguments (:class:`pddr_mm.ops.PDArgs`). A branch a layer cannot take is left out
            of that layer; a PD-B layer left with fewer than two branches stays plain.

    The report (also stored as ``model.pddr_report`` and logged once): ``converted`` {conv name: kind},
    ``plain`` {conv name: reason}, ``dropped_branches`` {conv name: [(branch, reason)]}.
    """
    pd = PDArgs.create('convert_to_pd', pd_args)
    check_selection(include, exclude, kernel_sizes)
    found, num_bn = trace_conv_consumers(model, inputs)
    modules = dict(model.named_modules())
    converted, plain, dropped_branches = {}, {}, {}
    layers = getattr(model, 'pddr_layers', {})
    for name, trace in found.items():
        conv, norm_name = modules[name], trace.norm
        unselected = excluded_by_name(name, include, exclude)
        if unselected:
            plain[name] = unselected
            continue
        if not _kernel_selected(conv.kernel_size, kernel_sizes):
            plain[name] = f'{conv_kind(conv)} kernel not in kernel_sizes' + (' (default: 3x3 and larger)'
                                                                         if kernel_sizes is None else '')
            continue
        if norm_name is None:
            plain[name] = trace.why
            continue
        bn = modules[norm_name]
        norm_cfg, padding = _norm_cfg(bn), _padding(conv)
        if norm_cfg is None:
            plain[name] = f'{type(bn).__name__} cannot be folded (needs affine BN with running statistics)'
            continue
        if conv.padding_mode != 'zeros' or padding is None:
            plain[name] = f"padding {conv.padding!r} / padding_mode {conv.padding_mode!r} not supported"
            continue
        kept, dropped = filter_branches(pd.branches, conv.in_channels, conv.out_channels, conv.kernel_size,
                                         conv.stride, padding, conv.dilation, conv.groups, norm_cfg, pd.branch_groups)
        if dropped:
            dropped_branches[name] = dropped
        if len(kept) < (2 if pd.mode == 'B' else 1):
            plain[name] = (f"{len(kept)} branch(es) left for mode '{pd.mode}'" +
                           (f" (dropped: {'; '.join(f'{b}: {r}' for b, r in dropped)})" if dropped else ''))
            continue
        layer = PDConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                         padding=padding, dilation=conv.dilation, groups=conv.groups, bias=False, norm_cfg=norm_cfg,
                         **dict(pd.to_dict(), branches=kept)).to(conv.weight)
        if not pd.deploy:  # now: a parent (mmcv's ConvModule) may never call init_weights; quietly
            initialize(layer, layer.init_cfg)
            layer._is_init = True
        _copy_requires_grad(layer, conv, bn)
        layer.train(conv.training)
        set_module(model, name, layer)
        set_module(model, norm_name, nn.Identity())
        converted[name] = conv_kind(conv)
        layers[name] = dict(norm=norm_name, conv_bias=conv.bias is not None)
    model.pddr_layers = layers
    if layers and not getattr(model, '_pddr_hook', False):
        model._register_load_state_dict_pre_hook(_load_plain_pairs, with_module=True)
        model._pddr_hook = True
    report = dict(converted=converted, plain=plain, dropped_branches=dropped_branches, num_bn=num_bn)
    model.pddr_report = report
    if log:
        print_log(format_report(report, type(model).__name__, pd.mode), logger='current')
    return report


def _copy_requires_grad(layer: PDConv2d, conv: nn.Conv2d, bn: _BatchNorm) -> None:
    """A frozen conv / BN (``frozen_stages``, ``requires_grad=False`` in norm_cfg) stays frozen."""
    for p in layer.parameters():
        p.requires_grad_(conv.weight.requires_grad)
    for m in layer.modules():
        if isinstance(m, _BatchNorm):
            for p in m.parameters():
                p.requires_grad_(bn.weight.requires_grad)


def format_report(report: Dict, model_name: str, mode: str) -> str:
    """The conversion summary: layers converted per kind, left plain per reason (a few names each)."""
    kinds = Counter(report['converted'].values())
    lines = [f'PDDR: {sum(kinds.values())} convolutions of {model_name} converted to PD-{mode} PDConv2d'
             + (f" ({', '.join(f'{k}: {n}' for k, n in sorted(kinds.items()))})" if kinds else '')]
    by_reason = defaultdict(list)
    for name, reason in report['plain'].items():
        by_reason[reason].append(name)
    if by_reason:
        lines.append(f"left plain: {len(report['plain'])}")
        for reason, names in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
            more = f', ... (+{len(names) - 3})' if len(names) > 3 else ''
            lines.append(f'  {len(names)} {reason}: {", ".join(names[:3])}{more}')
    drops = Counter(f'{b if isinstance(b, str) else b.get("type")}: {r}'
                    for d in report['dropped_branches'].values() for b, r in d)
    for what, n in sorted(drops.items()):
        lines.append(f'  branch dropped in {n} layer(s): {what}')
    if report['num_bn'] == 0:
        lines.append('  the network has no BatchNorm: nothing to pair')
    return '\n'.join(lines)


# --------------------------------------------------------------------------------------------- plain start
def _load_plain_pairs(module: nn.Module, state_dict: Dict[str, Tensor], prefix: str, *args) -> None:
    """load_state_dict pre-hook: plain conv + BN keys of converted pairs -> an equivalent PDConv2d state.

    A pair already in PDDR form (or a deployed layer) is left alone; a conv bias (redundant before a BN)
    is folded into the BN's running mean. Logs one line when it maps anything (a plain start).
    """
    mapped = Counter()
    for conv_name, info in getattr(module, 'pddr_layers', {}).items():
        layer = module.get_submodule(conv_name)
        conv_prefix, norm_prefix = f'{prefix}{conv_name}.', f'{prefix}{info["norm"]}.'
        if (getattr(layer, 'deploy', True) or conv_prefix + 'weight' not in state_dict
                or norm_prefix + 'running_mean' not in state_dict
                or any(k.startswith(conv_prefix + 'branches.') for k in state_dict)):
            continue
        bias = state_dict.pop(conv_prefix + 'bias', None)
        if bias is not None:  # BN(conv(x) + b) = BN'(conv(x)) with running_mean' = running_mean - b
            state_dict[norm_prefix + 'running_mean'] = state_dict[norm_prefix + 'running_mean'] - bias
        plain_to_pd_layer(state_dict, conv_prefix, norm_prefix, PDArgs(layer.mode, layer.branch_cfgs),
                          template=layer.state_dict(), groups=layer.groups)
        mapped[layer.mode] += 1
    for mode, n in mapped.items():
        print_log(f'PDDR: {n} plain conv + BN pairs of the checkpoint mapped into PD-{mode} layers of '
                  f'{type(module).__name__} (a plain start: the network computes what the plain one did, in eval '
                  'mode)', logger='current')
