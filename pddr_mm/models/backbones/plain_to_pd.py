"""Start a PDDR network from plain weights: one function maps a plain conv + BN to PDConv2d keys.

The mapping is function-preserving in eval mode, exactly: the plain kernel and BN go into every
'standard' branch, every other branch gets a BN with gamma = beta = 0 (its output is 0 in eval), and
the standard branches' gamma and beta are scaled so that their combination returns the plain output:
by 1/S for PD-A (S standard branches summed) and by B/S for PD-B, whose refinement starts with a zero
``fc2`` (softmax weights exactly 1/B for B branches). Used by ``PDResNet`` when it loads a plain
checkpoint (``init_cfg=dict(type='Pretrained', ...)``, ``load_from``) and by
``tools/model_converters/plain_to_pd.py``.
"""
import math
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ...ops import DEFAULT_BRANCHES

BN_KEYS = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
# a 3x3 conv of a residual block and the BN after it, as mmdet/mmpretrain/torchvision ResNets name them
_BLOCK_CONV = re.compile(r'^(?P<block>(?:.*\.)?layer\d+\.\d+\.)conv(?P<idx>\d+)\.weight$')


def _kaiming(shape: Sequence[int], gen: torch.Generator) -> Tensor:
    """Kaiming-normal (fan_out, ReLU), the init PDConv2d gives its branch convs."""
    fan_out = shape[0] * math.prod(shape[2:])
    return torch.randn(*shape, generator=gen) * math.sqrt(2.0 / fan_out)


def _linear(out_f: int, in_f: int, gen: torch.Generator) -> Tuple[Tensor, Tensor]:
    """nn.Linear's default init (uniform in +-1/sqrt(in_features))."""
    bound = 1.0 / math.sqrt(in_f)
    return ((torch.rand(out_f, in_f, generator=gen) * 2 - 1) * bound,
            (torch.rand(out_f, generator=gen) * 2 - 1) * bound)


def plain_to_pd_layer(state_dict: Dict[str, Tensor],
                      conv_prefix: str,
                      norm_prefix: str,
                      mode: str = 'A',
                      branches: Sequence[str] = DEFAULT_BRANCHES,
                      branch_groups: int = 64,
                      reduction: int = 16,
                      template: Optional[Dict[str, Tensor]] = None,
                      seed: int = 0) -> None:
    """Replace, in place, a plain conv (``conv_prefix + 'weight'``) and its BN (``norm_prefix + ...``)
    by the state of an equivalent PDConv2d at ``conv_prefix``.

    ``template`` (a PDConv2d's own ``state_dict()``) supplies the tensors that carry no plain
    information (non-standard branch kernels, the refinement's ``fc1``); without it they are drawn
    with PDConv2d's initialisation from ``seed``.
    """
    branches = tuple(branches)
    num_std = branches.count('standard')
    if num_std == 0:
        raise ValueError(f"starting from plain weights needs a 'standard' branch, got branches={branches}")
    scale = len(branches) / num_std if mode == 'B' else 1.0 / num_std
    weight = state_dict.pop(conv_prefix + 'weight')
    bn = {k: state_dict.pop(norm_prefix + k) for k in BN_KEYS if norm_prefix + k in state_dict}
    missing = [k for k in ('weight', 'bias', 'running_mean', 'running_var') if k not in bn]
    if missing:
        raise KeyError(f'plain BN {norm_prefix!r} lacks {missing}: cannot start {conv_prefix!r} from it')
    out_c, in_c, kh, kw = weight.shape
    gen = torch.Generator().manual_seed(seed)
    template = template or {}

    def fill(key: str, shape: Sequence[int]) -> Tensor:
        t = template.get(key)
        return t.detach().clone().to(weight) if t is not None else _kaiming(shape, gen).to(weight)

    def zero_bn(key: str) -> None:
        state_dict[key + 'weight'] = torch.zeros_like(bn['weight'])
        state_dict[key + 'bias'] = torch.zeros_like(bn['bias'])
        state_dict[key + 'running_mean'] = torch.zeros_like(bn['running_mean'])
        state_dict[key + 'running_var'] = torch.ones_like(bn['running_var'])
        if 'num_batches_tracked' in bn:
            state_dict[key + 'num_batches_tracked'] = torch.zeros_like(bn['num_batches_tracked'])

    for i, name in enumerate(branches):
        key = f'{conv_prefix}branches.{i}.'
        if name == 'standard':
            state_dict[key + 'conv.weight'] = weight.clone()
            for k, v in bn.items():
                state_dict[key + 'bn.' + k] = v * scale if k in ('weight', 'bias') else v.clone()
        elif name == 'group':
            state_dict[key + 'conv.weight'] = fill(key + 'conv.weight', (out_c, in_c // branch_groups, kh, kw))
            zero_bn(key + 'bn.')
        elif name == 'skeleton':
            for part, shape in (('ver', (out_c, in_c, kh, 1)), ('hor', (out_c, in_c, 1, kw))):
                state_dict[f'{key}{part}.conv.weight'] = fill(f'{key}{part}.conv.weight', shape)
                zero_bn(f'{key}{part}.bn.')
        else:
            raise ValueError(f'unknown branch {name!r}')
    if mode == 'B':
        hidden = max(in_c // reduction, 1)
        key = conv_prefix + 'refine.'
        if key + 'fc1.weight' in template:
            w1, b1 = template[key + 'fc1.weight'], template[key + 'fc1.bias']
        else:
            w1, b1 = _linear(hidden, in_c, gen)
        state_dict[key + 'fc1.weight'] = w1.detach().clone().to(weight)
        state_dict[key + 'fc1.bias'] = b1.detach().clone().to(weight)
        state_dict[key + 'fc2.weight'] = weight.new_zeros(len(branches), hidden)
        state_dict[key + 'fc2.bias'] = weight.new_zeros(len(branches))


def find_block_convs(state_dict: Dict[str, Tensor]) -> List[Tuple[str, str]]:
    """(conv prefix, BN prefix) of every plain kxk (k > 1) conv inside a ResNet residual block.

    Matches torchvision, mmdet and mmpretrain naming (``[backbone.]layerI.J.convK.weight`` with its BN
    at ``bnK``); 1x1 convs (Bottleneck conv1/conv3) and the stem are left plain, as in PDResNet.
    """
    pairs = []
    for key, value in state_dict.items():
        m = _BLOCK_CONV.match(key)
        if m and value.dim() == 4 and min(value.shape[-2:]) > 1:
            block, idx = m.group('block'), m.group('idx')
            pairs.append((f'{block}conv{idx}.', f'{block}bn{idx}.'))
    return pairs


def plain_to_pd_state_dict(state_dict: Dict[str, Tensor],
                           pairs: Optional[Iterable[Tuple[str, str]]] = None,
                           seed: int = 0,
                           **pd_kwargs) -> Dict[str, Tensor]:
    """A new state dict with every (conv, BN) pair (default: ``find_block_convs``) in PDConv2d form."""
    out = dict(state_dict)
    pairs = find_block_convs(out) if pairs is None else list(pairs)
    for i, (conv_prefix, norm_prefix) in enumerate(pairs):
        plain_to_pd_layer(out, conv_prefix, norm_prefix, seed=seed + i, **pd_kwargs)
    return out
