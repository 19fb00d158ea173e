"""PDDRBackbone: any backbone of the config zoo, its conv + BN pairs trained as PDDR layers.

Registered as a builder function, not a wrapper module: what it returns IS the inner backbone (same
class, same module names), with every selected conv + BN pair replaced by a PDConv2d. So everything
the inner backbone offers keeps working unchanged: ``out_indices``, ``frozen_stages``, ``norm_eval``,
``with_cp``, its ``init_cfg``, and the keys of a plain detector or classifier checkpoint.
"""
import copy
from typing import Dict, Optional, Sequence, Tuple

import torch.nn as nn
from mmengine.registry import MODELS

from ...ops import PDArgs
from ...surgery import build_inner_backbone, convert_backbone
from ..convert import KernelSizes, convert_to_pd


PD_HINT = 'include / exclude / kernel_sizes, or use a backbone built of convolutions followed by BatchNorm'


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
    traced forward of the built network (:func:`pddr_mm.models.convert.convert_to_pd`, on :mod:`pddr_mm.surgery`), so any backbone
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
    model = build_inner_backbone(backbone, 'PDDRBackbone')
    if init_cfg is not None:
        model.init_cfg = copy.deepcopy(init_cfg)
    return convert_backbone(model, 'PDDRBackbone', convert_to_pd, backbone.get('in_channels', 3), trace_shape,
                            hint=PD_HINT, kernel_sizes=kernel_sizes, include=include, exclude=exclude,
                            **pd.to_dict())


def _plain_cfg(cfg: Dict) -> Dict:
    """The plain baseline of a PDDRBackbone config: its inner backbone (``pddr_mm.deployment.configs``)."""
    return cfg['backbone']


PDDRBackbone.plain_cfg = _plain_cfg
MODELS.register_module('PDDRBackbone', module=PDDRBackbone)
