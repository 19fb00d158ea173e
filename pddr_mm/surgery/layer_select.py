"""Which convolutions of a network a conversion may touch, read from one traced forward of the network.

Shared by the conversions of pddr_mm, so that they find layers the same way and take the same selection
arguments: PDDR (:func:`pddr_mm.models.convert.convert_to_pd`) needs each conv's BatchNorm partner, RPG
(:mod:`pddr_mm.rpg`) needs to know which convs are called and which read the network input (the stem).
Neither keeps a list of layers per architecture.
"""
import copy
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.model import revert_sync_batchnorm
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ..utils import flatten_tensors

NORMS = (_BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)


def conv_types() -> Tuple[type, ...]:
    """Conv classes computing exactly ``nn.Conv2d.forward`` (mmcv's wrapper only adds empty-input support)."""
    types = [nn.Conv2d]
    try:
        from mmcv.cnn.bricks.wrappers import Conv2d as MMCVConv2d
        types.append(MMCVConv2d)
    except ImportError:
        pass
    return tuple(types)


def conv_kind(conv: nn.Conv2d) -> str:
    """'3x3', '1x1 groups=4', '3x3 depthwise': how the conversion logs count layers."""
    kind = 'x'.join(map(str, conv.kernel_size))
    if conv.groups == 1:
        return kind
    depthwise = conv.groups == conv.in_channels == conv.out_channels
    return f'{kind} depthwise' if depthwise else f'{kind} groups={conv.groups}'


def check_selection(include, exclude, kernel_sizes=None) -> None:
    """Raise ValueError for selection arguments that would otherwise select silently wrong (a string taken
    as a list of its characters) or fail obscurely (a malformed regular expression)."""
    for key, patterns in (('include', include), ('exclude', exclude)):
        if patterns is None:
            continue
        if isinstance(patterns, str) or not isinstance(patterns, Sequence):
            raise ValueError(f'{key} must be a list of regular expressions, e.g. {key}=[{patterns!r}], '
                             f'got {patterns!r}')
        for pattern in patterns:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as e:
                raise ValueError(f'{key}: {pattern!r} is not a regular expression ({e})') from e
    if kernel_sizes is not None and (isinstance(kernel_sizes, (int, str)) or not isinstance(kernel_sizes, Sequence)):
        raise ValueError(f'kernel_sizes must be a list of kernel sizes (k for kxk, or (kh, kw)), e.g. '
                         f'kernel_sizes=[{kernel_sizes!r}], got {kernel_sizes!r}')


def excluded_by_name(name: str, include: Optional[Sequence[str]], exclude: Optional[Sequence[str]]) -> Optional[str]:
    """Why ``include`` / ``exclude`` (regular expressions searched in the module name) leave ``name`` plain,
    or None if they select it."""
    if include is not None and not any(re.search(p, name) for p in include):
        return 'not matched by include'
    if exclude is not None and any(re.search(p, name) for p in exclude):
        return 'matched by exclude'
    return None


# --------------------------------------------------------------------------------------------- trace
@dataclass
class ConvTrace:
    """What one traced forward says about a Conv2d.

    ``norm``: the BatchNorm it pairs with (its output feeds only that BN, both called once), else None,
    and ``why`` ('pair', or why not); ``calls``: how often it ran; ``reads_input``: its input is the
    network's input tensor itself (a stem convolution); ``own_forward``: a subclass with its own forward
    (deformable, switchable convs ...), whose weight is not a plain kernel.
    """
    norm: Optional[str]
    why: str
    calls: int = 0
    reads_input: bool = False
    own_forward: bool = False


def _consumer_counts(outputs: List[Tensor]) -> Counter:
    """How many edges of the autograd graph (reachable from ``outputs``) point at each node; a returned
    tensor counts as one more consumer of its node."""
    counts: Counter = Counter(t.grad_fn for t in outputs if t.grad_fn is not None)
    stack, seen = list(counts), set(counts)
    while stack:
        node = stack.pop()
        for nxt, _ in node.next_functions:
            if nxt is None:
                continue
            counts[nxt] += 1
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return counts


def trace_conv_consumers(model: nn.Module, inputs: Tensor) -> Tuple[Dict[str, ConvTrace], int]:
    """For every Conv2d of ``model`` (by name, in module order): its :class:`ConvTrace`.

    A (conv, BN) pair needs: the BN's input *is* the conv's output (the same tensor object, not modified
    in place in between); both are called exactly once; in the autograd graph the conv's output node has
    exactly one consumer (the BN): no residual, concatenation, view or returned feature reads the
    un-normalised output.

    Runs one forward on a copy of ``model`` (training mode, SyncBN reverted to BN so it runs on one CPU,
    ``with_cp`` off so that the graph is recorded), so the model itself, its BN statistics and the global
    RNG are untouched. Also returns the number of BN modules found (0: nothing to pair).
    """
    clone = revert_sync_batchnorm(copy.deepcopy(model))
    for m in clone.modules():
        if isinstance(getattr(m, 'with_cp', None), bool):
            m.with_cp = False  # checkpointing runs the forward without a graph
    types = conv_types()
    conv_out: Dict[str, List[Tuple[Tensor, Any]]] = defaultdict(list)
    received: Dict[int, List[Tuple[str, Any]]] = defaultdict(list)  # id(tensor) -> [(leaf name, grad_fn)]
    calls: Counter = Counter()
    keep: List[Tensor] = []  # every recorded tensor stays alive, so that ids are not reused
    handles = []

    def on_conv(name):
        def hook(module, args, out):
            conv_out[name].append((out, out.grad_fn))
            keep.append(out)
        return hook

    def on_leaf(name):
        def hook(module, args):
            calls[name] += 1
            if args and isinstance(args[0], Tensor):
                keep.append(args[0])
                received[id(args[0])].append((name, args[0].grad_fn))
        return hook

    names = {}
    for name, m in clone.named_modules():
        names[name] = m
        if isinstance(m, types):
            handles.append(m.register_forward_hook(on_conv(name)))
        if not any(True for _ in m.children()) or isinstance(m, (*NORMS, nn.Conv2d)):
            handles.append(m.register_forward_pre_hook(on_leaf(name)))
    x = inputs.detach().requires_grad_()  # the caller's tensor is left as it is
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            clone.train()
            outputs = flatten_tensors(clone(x))
    finally:
        for h in handles:
            h.remove()
    counts = _consumer_counts(outputs)
    input_readers = {n for n, _ in received.get(id(x), [])}

    result: Dict[str, ConvTrace] = {}
    for name, m in names.items():
        if not isinstance(m, nn.Conv2d):
            continue
        trace = ConvTrace(None, '', calls=calls[name], reads_input=name in input_readers)
        result[name] = trace
        if type(m) not in types:
            trace.why, trace.own_forward = f'{type(m).__name__} has its own forward', True
            continue
        if len(conv_out[name]) != 1:
            trace.why = ('not called in the traced forward' if not conv_out[name] else
                         f'called {len(conv_out[name])} times (shared weights)')
            continue
        out, node = conv_out[name][0]
        takers = [(n, fn) for n, fn in received.get(id(out), []) if n != name]
        norms = [(n, fn) for n, fn in takers if isinstance(names[n], NORMS)]
        if not norms:
            trace.why = 'output not followed by a BatchNorm'
            continue
        norm_name, seen_fn = norms[0]
        norm = names[norm_name]
        if not isinstance(norm, _BatchNorm):
            trace.why = f'followed by {type(norm).__name__}, which cannot be folded'
        elif node is None:
            trace.why = 'output not in the autograd graph'
        elif len(takers) > 1 or counts[node] != 1 or seen_fn is not node:
            trace.why = 'output used elsewhere too (not only by its BatchNorm)'
        elif calls[norm_name] != 1:
            trace.why = f'its BatchNorm {norm_name} is called {calls[norm_name]} times'
        else:
            trace.norm, trace.why = norm_name, 'pair'
    num_bn = sum(isinstance(m, _BatchNorm) for m in names.values())
    return result, num_bn
