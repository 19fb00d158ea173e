"""PDDRBackbone: any backbone of the config zoo, its conv + BN pairs trained as PDDR layers.

Registered as a builder function, not a wrapper module: what it returns IS the inner backbone (same
class, same module names), with every selected conv + BN pair replaced by a PDConv2d. So everything
the inner backbone offers keeps working unchanged: ``out_indices``, ``frozen_stages``, ``norm_eval``,
``with_cp``, its ``init_cfg``, and the keys of a plain detector or classifier checkpoint.
"""
import copy
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.registry import MODELS, DefaultScope

from ...ops import PDArgs
from ..convert import KernelSizes, convert_to_pd


def _build_inner(cfg: Dict, owner: str = 'PDDRBackbone') -> nn.Module:
    """Build the inner backbone of a builder (``owner``: PDDRBackbone, RPGBackbone) in the caller's scope
    (the runner's ``default_scope``: mmdet, mmpretrain).

    Without a default scope, an unscoped type registered in exactly one downstream registry is taken from
    there; a type several of them know (``ResNet``) needs a scope: ``type='mmdet.ResNet'``.
    """
    cfg = copy.deepcopy(cfg)
    type_ = cfg.get('type')
    if DefaultScope.get_current_instance() is None and isinstance(type_, str) and '.' not in type_:
        owners = [scope for scope, child in MODELS._children.items() if type_ in child.module_dict]
        if type_ not in MODELS.module_dict and len(owners) == 1:
            cfg['type'] = f'{owners[0]}.{type_}'
    try:
        return MODELS.build(cfg)
    except KeyError as e:
        raise KeyError(f'{owner} cannot build its inner backbone {type_!r} ({e}). Build the model in '
                       "the config's scope (default_scope = 'mmdet' / 'mmpretrain'), or scope the type, e.g. "
                       "type='mmdet.ResNet'.") from e


class NothingConvertedError(ValueError):
    """A backbone builder converted no layer; ``report`` is the conversion's report (``converted``, ``plain``)."""

    def __init__(self, report: Dict, message: str) -> None:
        super().__init__(message)
        self.report = report


def convert_backbone(model: nn.Module, owner: str, in_channels: int = 3, trace_shape: Tuple[int, int] = (224, 224),
                     convert: Callable[..., Dict] = convert_to_pd,
                     hint: str = 'include / exclude / kernel_sizes, or use a backbone built of convolutions followed '
                     'by BatchNorm', **convert_args) -> nn.Module:
    """``convert(model, inputs, **convert_args)`` on a built backbone (``convert_to_pd``, or RPG's
    ``convert_to_rpg``), traced on 2 seeded random images of ``trace_shape``; raises NothingConvertedError
    if no layer was converted (a plain network under a PDDR / RPG name would be wrong), saying to check ``hint``."""
    if not (isinstance(trace_shape, Sequence) and len(trace_shape) == 2
            and all(isinstance(n, int) and n > 0 for n in trace_shape)):
        raise ValueError(f'{owner}: trace_shape must be (H, W) of positive ints, got {trace_shape!r}')
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(2, in_channels if isinstance(in_channels, int) else 3, *trace_shape, generator=gen)
    report = convert(model, inputs, **convert_args)
    if not report['converted']:
        reasons = sorted(set(report['plain'].values()))
        bns = f"{report['num_bn']} BatchNorms; " if 'num_bn' in report else ''
        raise NothingConvertedError(
            report, f"{owner} converted no convolution of {type(model).__name__} ({bns}why each conv stayed plain: "
            f'{reasons[:4]}). Check {hint}.')
    return model


def PDDRBackbone(backbone: Dict,
                 kernel_sizes: KernelSizes = None,
                 include: Optional[Sequence[str]] = None,
                 exclude: Optional[Sequence[str]] = None,
                 trace_shape: Tuple[int, int] = (224, 224),
                 init_cfg: Optional[Dict] = None,
                 **pd_args) -> nn.Module:
    """Build ``backbone`` (any backbone config) and convert its conv + BN pairs to PDConv2d.

    ``backbone=dict(type='PDDRBackbone', backbone=dict(type='MobileNetV2', ...), mode='B')``: every
    convolution whose output feeds only a BatchNorm becomes a PDConv2d (same stride, padding, dilation,
    groups) whose branch BNs replace that BN (which becomes ``nn.Identity``). The pairs are found from one
    traced forward of the built network (:func:`pddr_mm.models.convert.convert_to_pd`), so any backbone
    works without a list per architecture. What was converted, and what was left plain and why, is logged.

    Args:
        backbone: the inner backbone's config, unchanged (its ``init_cfg`` included: a Pretrained plain
            checkpoint starts the PDDR network computing what the plain one did, in eval mode).
        kernel_sizes: kernel sizes to convert (k for kxk, or (kh, kw)); default: 3x3 and larger.
        include / exclude: regular expressions searched in conv module names (e.g. ``exclude=['stem']``).
        trace_shape: (H, W) of the traced batch (2 images); any size the backbone accepts.
        init_cfg: if given, replaces the inner backbone's ``init_cfg``.
        pd_args: the PDDR arguments (:class:`pddr_mm.ops.PDArgs`). A branch a layer cannot take is left out
            of that layer; a PD-B layer needs two branches left, else stays plain.

    The plain baseline of this config (``tools/analysis_tools/benchmark.py``, ``pddr_mm.deployment.to_plain_config``)
    is ``backbone`` itself.
    """
    if not isinstance(backbone, dict) or 'type' not in backbone:
        raise TypeError(f"PDDRBackbone: backbone must be a config dict with a 'type', got {backbone!r}")
    pd = PDArgs.create('PDDRBackbone', pd_args)  # checked before the (possibly large) inner build
    model = _build_inner(backbone)
    if init_cfg is not None:
        model.init_cfg = copy.deepcopy(init_cfg)
    return convert_backbone(model, 'PDDRBackbone', backbone.get('in_channels', 3), trace_shape,
                            kernel_sizes=kernel_sizes, include=include, exclude=exclude, **pd.to_dict())


def _plain_cfg(cfg: Dict) -> Dict:
    """The plain baseline of a PDDRBackbone config: its inner backbone (``pddr_mm.deployment.configs``)."""
    return cfg['backbone']


PDDRBackbone.plain_cfg = _plain_cfg
MODELS.register_module('PDDRBackbone', module=PDDRBackbone)
