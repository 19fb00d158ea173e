"""Building a config's inner backbone and converting its layers in place: what the backbone builders of
every method (``PDDRBackbone``, ``PDResNet``, ``RPGBackbone``) do before and after their own conversion.

A builder returns the inner backbone itself (same class, same module names), so ``out_indices``,
``frozen_stages``, ``norm_eval``, ``with_cp``, its ``init_cfg`` and plain checkpoint keys keep working.
"""
import copy
from typing import Callable, Dict, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.registry import MODELS, DefaultScope


def build_inner_backbone(cfg: Dict, owner: str) -> nn.Module:
    """Build the inner backbone of the builder ``owner`` in the caller's scope (the runner's
    ``default_scope``: mmdet, mmpretrain).

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


def convert_backbone(model: nn.Module, owner: str, convert: Callable[..., Dict], in_channels: int = 3,
                     trace_shape: Tuple[int, int] = (224, 224), hint: str = 'include / exclude / kernel_sizes',
                     **convert_args) -> nn.Module:
    """``convert(model, inputs, **convert_args)`` on a built backbone (PDDR's ``convert_to_pd``, RPG's
    ``convert_to_rpg``: each returns a report with ``converted`` and ``plain`` {name: why}), traced on 2
    seeded random images of ``trace_shape``; raises NothingConvertedError if no layer was converted (a plain
    network under a method's name would be wrong), saying to check ``hint``."""
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
