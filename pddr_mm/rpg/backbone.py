"""RPGBackbone: any backbone of the config zoo, its convolutions generated from a shared model ring.

A builder function, like PDDRBackbone: what it returns IS the inner backbone (same class, same module
names), with the selected convolutions replaced by RPGConv2d and the ring registered as ``rpg``. So
``out_indices``, ``norm_eval``, ``with_cp`` and the rest of the inner backbone keep working, and its
deployed form (:func:`pddr_mm.switch_to_deploy`) has exactly the plain backbone's state-dict keys.
"""
import copy
from typing import Dict, Optional, Sequence, Tuple

import torch.nn as nn
from mmengine.registry import MODELS

from ..surgery import build_inner_backbone, check_selection, convert_backbone
from .convert import check_rpg_args, convert_to_rpg


def RPGBackbone(backbone: Dict,
                ring_ratio: Optional[float] = None,
                ring_size: Optional[int] = None,
                rings: str = 'global',
                seed: int = 0,
                permutation: str = 'full',
                include: Optional[Sequence[str]] = None,
                exclude: Optional[Sequence[str]] = None,
                trace_shape: Tuple[int, int] = (224, 224),
                init_cfg: Optional[Dict] = None,
                deploy: bool = False) -> nn.Module:
    """Build ``backbone`` (any backbone config) with its convolutions generated from a model ring (RPG).

    ``backbone=dict(type='RPGBackbone', backbone=dict(type='ResNet', depth=18), ring_ratio=0.25)``: every
    convolution except the stem becomes an RPGConv2d whose kernel is gathered from one shared vector of
    N = T / 4 parameters (T: their kernel elements) with fixed random signs and its own kaiming scale.
    The layers are found from one traced forward, so any backbone built of convolutions works. What was
    converted, T, N and T/N are logged. See :func:`pddr_mm.rpg.convert.convert_to_rpg` for the arguments.

    Args:
        backbone: the inner backbone's config. Its ``init_cfg`` must not load a plain checkpoint (an error
            says so): a ring cannot take plain kernels.
        trace_shape: (H, W) of the traced batch (2 images).
        init_cfg: if given, replaces the inner backbone's ``init_cfg``.
        deploy: build the deployed form directly, the inner backbone itself (what ``switch_to_deploy``
            turns an RPG backbone into), to load a deploy checkpoint.

    The plain baseline of this config (benchmark, ``pddr_mm.deployment.to_plain_config``) is ``backbone``.
    """
    if not isinstance(backbone, dict) or 'type' not in backbone:
        raise TypeError(f"RPGBackbone: backbone must be a config dict with a 'type', got {backbone!r}")
    check_rpg_args(ring_size, ring_ratio, rings, seed, permutation)  # before the (possibly large) inner build
    check_selection(include, exclude)
    model = build_inner_backbone(backbone, 'RPGBackbone')
    if init_cfg is not None:
        model.init_cfg = copy.deepcopy(init_cfg)
    if deploy:
        return model
    return convert_backbone(model, 'RPGBackbone', convert_to_rpg, backbone.get('in_channels', 3), trace_shape,
                            hint='include / exclude (the stem stays plain unless include names it)',
                            ring_size=ring_size, ring_ratio=ring_ratio, rings=rings, seed=seed,
                            permutation=permutation, include=include, exclude=exclude)


def _plain_cfg(cfg: Dict) -> Dict:
    """The plain baseline of an RPGBackbone config: its inner backbone (``pddr_mm.deployment.configs``)."""
    return cfg['backbone']


RPGBackbone.plain_cfg = _plain_cfg
MODELS.register_module('RPGBackbone', module=RPGBackbone)
