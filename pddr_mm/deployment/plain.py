"""A fused PD-A model as the stock OpenMMLab model of its plain config: the state-dict mapping.

After ``switch_to_deploy`` a PD-A layer at module name N holds one convolution with a bias
(``N.fused.weight``, ``N.fused.bias``); in the plain model N is an ``nn.Conv2d``. Where that conv has a bias
the two copy over. Where it has none, a BatchNorm follows it, and the fused bias moves into that BN:
``BN(z + c) == BN'(z)`` with ``running_mean' = running_mean - c``. A BN the PDDR model does not hold (its
branch BNs replaced it) starts as the identity first. Every other key copies by name.
"""
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from pddr_mm.ops import MixedConv2d, PDConv2d


class PlainMappingError(ValueError):
    """The fused model's layers do not map onto the plain model (a config this mapping does not know)."""


def pd_b_layers(fused: nn.Module) -> List[str]:
    """Names of the fused PD-B layers (per-sample kernels: no stock convolution computes them)."""
    return [name for name, m in fused.named_modules() if isinstance(m, MixedConv2d)]


def _norm_after(name: str, fused: Dict[str, nn.Module], plain: Dict[str, nn.Module]) -> Optional[str]:
    """The name of the BN that follows conv ``name`` in the plain model (None: no BN follows it)."""
    parent, _, attr = name.rpartition('.')
    module = plain.get(parent)
    order = getattr(module, 'order', ())
    if getattr(module, 'with_norm', False) and attr == 'conv' and 'norm' in order and \
            order.index('norm') == order.index('conv') + 1:  # mmcv's ConvModule: conv, then its norm
        return f'{parent}.{module.norm_name}' if parent else module.norm_name
    for owner_name, owner in fused.items():  # a converted network (convert_to_pd) records its pairs
        prefix = f'{owner_name}.' if owner_name else ''
        layers = getattr(owner, 'pddr_layers', None)
        if isinstance(layers, dict) and name.startswith(prefix) and name[len(prefix):] in layers:
            return prefix + layers[name[len(prefix):]]['norm']
    return None


def _identity_bn(bn: _BatchNorm, prefix: str) -> Dict[str, Tensor]:
    """The state of ``bn`` computing the identity in eval mode (``sqrt(running_var + eps) == 1``)."""
    ref = bn.running_mean if bn.running_mean is not None else bn.weight
    state = dict(running_mean=torch.zeros_like(ref), running_var=torch.full_like(ref, 1 - bn.eps),
                 num_batches_tracked=torch.tensor(0, dtype=torch.long))
    if bn.affine:
        state.update(weight=torch.ones_like(ref), bias=torch.zeros_like(ref))
    return {f'{prefix}.{k}': v for k, v in state.items()}


def plain_state_dict(fused: nn.Module, plain: nn.Module) -> Dict[str, Tensor]:
    """The state of ``plain`` (built from the plain config) that computes what ``fused`` (PD-A, fused) does."""
    state = {k: v.detach().clone() for k, v in fused.state_dict().items()}
    fused_modules, plain_modules = dict(fused.named_modules()), dict(plain.named_modules())
    for name, layer in fused_modules.items():
        if not isinstance(layer, PDConv2d):
            continue
        conv = plain_modules.get(name)
        if not isinstance(conv, nn.Conv2d):
            raise PlainMappingError(f'{name}: the plain model holds {type(conv).__name__} where the PDDR layer is, '
                                    'not a Conv2d')
        weight, bias = state.pop(f'{name}.fused.weight'), state.pop(f'{name}.fused.bias')
        state[f'{name}.weight'] = weight
        if conv.bias is not None:
            state[f'{name}.bias'] = bias
            continue
        norm = _norm_after(name, fused_modules, plain_modules)
        if not isinstance(plain_modules.get(norm), _BatchNorm) or plain_modules[norm].running_mean is None:
            raise PlainMappingError(f'{name}: the plain Conv2d has no bias and no BatchNorm with running statistics '
                                    'follows it: the fused bias has nowhere to go')
        if f'{norm}.running_mean' not in state:  # the PDDR layer's branch BNs replaced it
            state.update(_identity_bn(plain_modules[norm], norm))
        state[f'{norm}.running_mean'] = state[f'{norm}.running_mean'] - bias
    return state
