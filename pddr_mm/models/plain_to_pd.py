"""Start a PDDR network from plain weights: one function maps a plain conv + BN to PDConv2d keys.

The mapping is function-preserving in eval mode, exactly: the plain kernel and BN go into every
'standard' branch, every other branch gets a BN with gamma = beta = 0 (its output is 0 in eval), and
the standard branches' gamma and beta are scaled so that their combination returns the plain output:
by 1/S for PD-A (S standard branches summed) and by B/S for PD-B, whose refinement starts with a zero
``fc2`` (softmax weights exactly 1/B for B branches). Used by every converted network (``convert_to_pd``: PDResNet, PDDRBackbone) when it loads a plain
checkpoint (``init_cfg=dict(type='Pretrained', ...)``, ``load_from``) and by
``tools/model_converters/plain_to_pd.py``.
"""
import re
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor

from ..ops import PDArgs, PDConv2d

BN_KEYS = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
# a 3x3 conv of a residual block and the BN after it, as mmdet/mmpretrain/torchvision ResNets name them
_BLOCK_CONV = re.compile(r'^(?P<block>(?:.*\.)?layer\d+\.\d+\.)conv(?P<idx>\d+)\.weight$')


def _template(weight: Tensor, pd: PDArgs, groups: int, seed: int) -> Dict[str, Tensor]:
    """The state of a freshly initialised PDConv2d of the plain kernel's shape (drawn from ``seed``)."""
    out_c, in_per_group, kh, kw = weight.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = PDConv2d(in_per_group * groups, out_c, (kh, kw), padding=(kh // 2, kw // 2), groups=groups,
                         **dict(pd.to_dict(), deploy=False))
        layer.init_weights()
    return layer.state_dict()


def plain_to_pd_layer(state_dict: Dict[str, Tensor],
                      conv_prefix: str,
                      norm_prefix: str,
                      pd: PDArgs = PDArgs(),
                      template: Optional[Dict[str, Tensor]] = None,
                      seed: int = 0,
                      groups: int = 1) -> None:
    """Replace, in place, a plain conv (``conv_prefix + 'weight'``) and its BN (``norm_prefix + ...``)
    by the state of an equivalent PDConv2d at ``conv_prefix``.

    ``template`` is the PDConv2d's own ``state_dict()`` (keys with or without ``conv_prefix``); it supplies
    every tensor that carries no plain information, whatever the branch types. Without it one is drawn
    from ``seed`` (``groups``: the plain conv's groups). ``pd``: the layer's PDDR arguments.
    """
    names = [b if isinstance(b, str) else b['type'] for b in pd.branches]
    num_std = names.count('standard')
    if num_std == 0:
        raise ValueError(f"starting from plain weights needs a 'standard' branch, got branches={pd.branches}")
    scale = len(names) / num_std if pd.mode == 'B' else 1.0 / num_std
    weight = state_dict.pop(conv_prefix + 'weight')
    bn = {k: state_dict.pop(norm_prefix + k) for k in BN_KEYS if norm_prefix + k in state_dict}
    missing = [k for k in ('weight', 'bias', 'running_mean', 'running_var') if k not in bn]
    if missing:
        raise KeyError(f'plain BN {norm_prefix!r} lacks {missing}: cannot start {conv_prefix!r} from it')
    if template is None:
        template = _template(weight, pd, groups, seed)
    template = {k[len(conv_prefix):] if k.startswith(conv_prefix) else k: v for k, v in template.items()}
    new = {k: v.detach().clone().to(weight) if v.is_floating_point() else v.clone() for k, v in template.items()}
    # every BN of a branch other than a standard one outputs 0 in eval mode: gamma = beta = 0
    for key in [k[:-len('running_mean')] for k in new if k.endswith('running_mean')]:
        new[key + 'weight'].zero_()
        new[key + 'bias'].zero_()
        new[key + 'running_mean'].zero_()
        new[key + 'running_var'].fill_(1)
    # the standard branches carry the plain conv and BN, gamma and beta scaled so that their sum (PD-A) or
    # their mix with uniform weights (PD-B) is the plain output
    for i, name in enumerate(names):
        if name == 'standard':
            key = f'branches.{i}.conv_bn.'
            new[key + 'conv.weight'] = weight.clone()
            for k, v in bn.items():
                new[key + 'bn.' + k] = v * scale if k in ('weight', 'bias') else v.clone()
    if pd.mode == 'B':  # a zero last layer: softmax weights exactly 1 / branches
        new['refine.fc2.weight'].zero_()
        new['refine.fc2.bias'].zero_()
    if 'bias' in new:
        new['bias'].zero_()
    state_dict.update({conv_prefix + k: v for k, v in new.items()})


def find_block_convs(state_dict: Dict[str, Tensor]) -> List[Tuple[str, str]]:
    """(conv prefix, BN prefix) of every plain kxk (k > 1) conv inside a ResNet residual block.

    Matches torchvision, mmdet and mmpretrain naming (``[backbone.]layerI.J.convK.weight`` with its BN
    at ``bnK``); 1x1 convs (Bottleneck conv1/conv3) and the stem are left plain, as in PDResNet (the
    offline converter's rule; a built model knows its own pairs, ``convert_to_pd``).
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
                           **pd_args) -> Dict[str, Tensor]:
    """A new state dict with every (conv, BN) pair (default: ``find_block_convs``) in PDConv2d form;
    ``pd_args``: the PDDR arguments (``PDArgs``)."""
    pd = PDArgs.create('plain_to_pd_state_dict', pd_args)
    out = dict(state_dict)
    pairs = find_block_convs(out) if pairs is None else list(pairs)
    for i, (conv_prefix, norm_prefix) in enumerate(pairs):
        plain_to_pd_layer(out, conv_prefix, norm_prefix, pd, seed=seed + i)
    return out
