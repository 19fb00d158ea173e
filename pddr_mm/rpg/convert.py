"""Turn the convolutions of any network into RPG layers generated from one model ring (or one per stage).

The convolutions are found from one traced forward (:func:`pddr_mm.surgery.trace_conv_consumers`,
shared with PDDR). The default selection is the authors': every convolution except the stem, 1x1, grouped
and depthwise ones included; BatchNorms (and every other module) keep their own parameters. The stem is,
generically, every convolution that reads the network input, and every module named ``stem*`` (a deep
stem); ``include`` replaces that rule, ``exclude`` adds to it. A convolution stays plain where it cannot
be generated faithfully: frozen (``requires_grad=False``, e.g. ``frozen_stages``), not called, a
subclass with its own forward, or a padding mode other than zeros.
"""
import math
import re
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from mmengine.logging import print_log
from torch import Tensor

from ..surgery import check_selection, conv_kind, excluded_by_name, trace_conv_consumers
from ..utils import set_module
from .conv import RPGConv2d
from .generation import PERMUTATIONS, generate, layout_fingerprint
from .ring import ModelRing

RINGS = ('global', 'stage')
RING_ATTR = 'rpg'  # where the ModelRing is registered on the converted network: state keys rpg.rings.0, ...
_STEM = re.compile(r'(^|\.)stem')


def check_rpg_args(ring_size, ring_ratio, rings, seed, permutation) -> None:
    if (ring_size is None) == (ring_ratio is None):
        raise ValueError(f'give exactly one of ring_size (ring entries) and ring_ratio (ring entries / kernel '
                         f'elements), got ring_size={ring_size!r}, ring_ratio={ring_ratio!r}')
    if ring_size is not None and (isinstance(ring_size, bool) or not isinstance(ring_size, (int, np.integer))
                                  or ring_size <= 0):
        raise ValueError(f'ring_size must be a positive int (ring entries), got {ring_size!r}')
    if ring_ratio is not None and (isinstance(ring_ratio, bool) or not isinstance(ring_ratio, (int, float))
                                   or not 0 < ring_ratio <= 1):
        raise ValueError(f'ring_ratio must be a number in (0, 1] (ring entries / kernel elements), got {ring_ratio!r}')
    if rings not in RINGS:
        raise ValueError(f'rings must be one of {RINGS}, got {rings!r}')
    if permutation not in PERMUTATIONS:
        raise ValueError(f'permutation must be one of {PERMUTATIONS}, got {permutation!r}')
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f'seed must be an int in [0, 2**32), got {seed!r}')


def _ring_sizes(totals: List[int], ring_size: Optional[int], ring_ratio: Optional[float]) -> List[int]:
    """N per ring: ``ring_ratio`` of each ring's kernel elements, or ``ring_size`` split over the rings in
    proportion to their kernel elements (largest remainders)."""
    total = sum(totals)
    if ring_ratio is not None:
        return [max(1, round(ring_ratio * t)) for t in totals]
    if ring_size > total:
        raise ValueError(f'ring_size={ring_size} is larger than the {total} kernel elements it would generate: a '
                         'ring is at most as large as the layers it serves (ring_ratio <= 1)')
    shares = [ring_size * t / total for t in totals]
    sizes = [math.floor(s) for s in shares]
    for i in sorted(range(len(totals)), key=lambda i: sizes[i] - shares[i])[:ring_size - sum(sizes)]:
        sizes[i] += 1
    if min(sizes) < 1:
        raise ValueError(f'ring_size={ring_size} leaves a stage without a ring entry ({len(totals)} rings of '
                         f'{totals} kernel elements): take a larger ring_size or rings=\'global\'')
    return sizes


def _select(model: nn.Module, inputs: Tensor, include, exclude):
    """(selected conv names in module order, {name: why it stays plain})."""
    found, _ = trace_conv_consumers(model, inputs)
    modules = dict(model.named_modules())
    selected, plain = [], {}
    for name, trace in found.items():
        conv = modules[name]
        why = excluded_by_name(name, include, exclude)
        if why is None and include is None and (trace.reads_input or _STEM.search(name)):
            why = 'stem (reads the network input)' if trace.reads_input else 'stem (named stem)'
        if why is None and trace.own_forward:
            why = trace.why
        if why is None and trace.calls == 0:
            why = 'not called in the traced forward'
        if why is None and not conv.weight.requires_grad:
            why = 'frozen (requires_grad=False): keeps its own weights'
        if why is None and conv.padding_mode != 'zeros':
            why = f'padding_mode {conv.padding_mode!r} not supported'
        if why is None:
            selected.append(name)
        else:
            plain[name] = why
    return selected, plain


def convert_to_rpg(model: nn.Module,
                   inputs: Tensor,
                   ring_size: Optional[int] = None,
                   ring_ratio: Optional[float] = None,
                   rings: str = 'global',
                   seed: int = 0,
                   permutation: str = 'full',
                   include: Optional[Sequence[str]] = None,
                   exclude: Optional[Sequence[str]] = None,
                   log: bool = True) -> Dict:
    """Replace, in place, every selected conv of ``model`` by an RPGConv2d generated from a ModelRing
    registered as ``model.rpg``; returns a report.

    Args:
        inputs: a small batch the model accepts (the traced forward).
        ring_size / ring_ratio: exactly one: the ring's entries N, or N / T (T: the kernel elements of the
            converted layers). With ``rings='stage'`` a ratio applies per stage, a size is split over the
            stages in proportion to their kernel elements.
        rings: 'global' (one ring, the authors' default) or 'stage' (one per top-level child: ResNet's
            ``layer1`` ... ``layer4``).
        seed: the indices and signs are drawn from it (the ring's initial values from torch's global RNG).
        permutation: 'full' (the authors' even sampling) or 'block' (cache-friendly; see
            :mod:`pddr_mm.rpg.generation`).
        include / exclude: regular expressions searched in the conv's module name; ``include`` replaces the
            default stem rule.

    The report (also ``model.rpg_report``, and logged in one line): ``converted`` {name: kind}, ``plain``
    {name: reason}, ``rings`` [{'layers', 'kernel_elements', 'ring_size'}], ``kernel_elements``, ``ring_size``.
    """
    check_rpg_args(ring_size, ring_ratio, rings, seed, permutation)
    check_selection(include, exclude)
    if hasattr(model, RING_ATTR):
        raise ValueError(f'{type(model).__name__} already has an attribute {RING_ATTR!r} (converted to RPG twice?)')
    selected, plain = _select(model, inputs, include, exclude)
    report = dict(converted={}, plain=plain, rings=[], kernel_elements=0, ring_size=0)
    if not selected:
        return report
    modules = dict(model.named_modules())
    groups: Dict[str, List[str]] = defaultdict(list)
    for name in selected:
        groups[name.split('.')[0] if rings == 'stage' else ''].append(name)
    groups_list = list(groups.values())
    totals = [sum(modules[n].weight.numel() for n in names) for names in groups_list]
    sizes = _ring_sizes(totals, ring_size, ring_ratio)

    # the ring's std: kaiming fan-out of its widest layer; each layer's scale gives it its own kaiming std
    fan_out = {n: modules[n].weight.shape[0] * modules[n].weight[0, 0].numel() for n in selected}
    stds = [math.sqrt(2 / max(fan_out[n] for n in names)) for names in groups_list]
    layout = layout_fingerprint(permutation, [(n, [tuple(modules[name].weight.shape) for name in names])
                                              for n, names in zip(sizes, groups_list)])
    record = dict(seed=seed, permutation=PERMUTATIONS.index(permutation), ring_size=sum(sizes),
                  kernel_elements=sum(totals), layout=layout)
    ring = ModelRing(sizes, stds, record).to(modules[selected[0]].weight)
    for ring_id, (names, total, size, std) in enumerate(zip(groups_list, totals, sizes, stds)):
        positions, signs = generate(total, size, seed, ring_id, permutation)
        start = 0
        for name in names:
            conv = modules[name]
            n = conv.weight.numel()
            scale = math.sqrt(2 / fan_out[name]) / std
            index = torch.from_numpy(positions[start:start + n].copy())
            coef = torch.from_numpy(signs[start:start + n].astype(np.float32)) * scale
            start += n
            layer = RPGConv2d(conv, ring, ring_id, index, coef, scale).to(conv.weight.device)
            layer.train(conv.training)
            set_module(model, name, layer)
            report['converted'][name] = conv_kind(conv)
        report['rings'].append(dict(layers=len(names), kernel_elements=total, ring_size=size))
    setattr(model, RING_ATTR, ring)
    report.update(kernel_elements=sum(totals), ring_size=sum(sizes))
    model.rpg_report = report
    if log:
        print_log(format_report(report, type(model).__name__, rings, permutation, seed), logger='current')
    return report


def format_report(report: Dict, model_name: str, rings: str, permutation: str, seed: int) -> str:
    """One line: what was converted (per kind), T, N, T/N, and what stayed plain (per reason)."""
    kinds = Counter(report['converted'].values())
    t, n = report['kernel_elements'], report['ring_size']
    sizes = [r['ring_size'] for r in report['rings']]
    per_ring = '' if len(sizes) == 1 else f' in {len(sizes)} rings {sizes}'
    reasons = Counter(report['plain'].values())
    plain = '; '.join(f'{k} {r}' for r, k in sorted(reasons.items(), key=lambda kv: -kv[1]))
    return (f"RPG: {sum(kinds.values())} convolutions of {model_name} generated from a {rings} ring "
            f"({', '.join(f'{k}: {c}' for k, c in sorted(kinds.items()))}): T = {t:,} kernel elements, N = {n:,} ring "
            f"entries{per_ring}, T/N = {t / max(n, 1):.2f} (permutation '{permutation}', seed {seed})"
            + (f'; left plain: {plain}' if plain else ''))
