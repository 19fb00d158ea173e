"""PDDR branch types behind one small protocol, registered by name in ``BRANCHES``.

A branch is an ``nn.Module`` built as ``cls(layer, **kwargs)`` for a layer described by ``LayerSpec``. It
computes its output in training (``forward``) and, with its BNs in eval mode, returns its equivalent
kernel and bias in the layer's full window and grouping (``kernel_bias``), differentiably, with the
functions of ``fusion``. A branch that makes no sense for a layer raises ``ValueError`` from ``check``.

To add a type, register it from your own module and load that with ``custom_imports``::

    from pddr_mm.ops import BRANCHES, Branch

    @BRANCHES.register_module(name='my_branch')
    class MyBranch(Branch):
        ...

then name it in a config: ``branches=('standard', 'my_branch')`` or ``dict(type='my_branch', ...)``.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.registry import Registry
from torch import Tensor
from torch.nn.modules.utils import _pair

from .fusion import fold_bn, identity_kernel, pad_to_window, to_layer_groups

BRANCHES = Registry('pddr branch')
BranchCfg = Union[str, Dict]


@dataclass(frozen=True)
class LayerSpec:
    """What a branch needs to know about its PDDR layer (the convolution it stands in for)."""
    in_channels: int
    out_channels: int
    kernel_size: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    dilation: Tuple[int, int]
    groups: int
    norm_cfg: Dict
    branch_groups: int = 64

    @classmethod
    def create(cls, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
               groups: int = 1, norm_cfg: Optional[Dict] = None, branch_groups: int = 64) -> 'LayerSpec':
        """A spec from ``nn.Conv2d``-style arguments (ints or pairs; padding also 'valid' or 'same')."""
        if norm_cfg is not None and not isinstance(norm_cfg, dict):
            raise ValueError(f"norm_cfg must be a dict with a 'type', e.g. dict(type='BN'), got {norm_cfg!r}")
        kernel_size, stride, dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        if isinstance(padding, str):
            padding = _string_padding(padding, kernel_size, stride, dilation)
        return cls(in_channels, out_channels, kernel_size, stride, _pair(padding), dilation, groups,
                   dict(norm_cfg or dict(type='BN')), branch_groups)

    def describe(self) -> str:
        return (f'{self.in_channels}->{self.out_channels}, kernel {self.kernel_size}, stride {self.stride}, '
                f'groups {self.groups}')


def same_padding(kernel_size: Tuple[int, int], dilation: Tuple[int, int]) -> Optional[Tuple[int, int]]:
    """The symmetric padding that keeps the size at stride 1 (``padding='same'``); None where none exists."""
    if any(d * (k - 1) % 2 for k, d in zip(kernel_size, dilation)):
        return None
    return tuple(d * (k - 1) // 2 for k, d in zip(kernel_size, dilation))


def _string_padding(padding: str, kernel_size, stride, dilation) -> Tuple[int, int]:
    """``nn.Conv2d``'s string paddings as numbers: 'valid' is 0, 'same' the symmetric size-keeping padding."""
    if padding == 'valid':
        return (0, 0)
    if padding != 'same':
        raise ValueError(f"padding must be a number, a pair, 'valid' or 'same', got {padding!r}")
    same = same_padding(kernel_size, dilation)
    if max(stride) != 1 or same is None:
        raise ValueError(f"padding='same' needs stride 1 and a symmetric padding, got kernel_size={kernel_size}, "
                         f'stride={stride}, dilation={dilation}')
    return same


class Branch(nn.Module):
    """The protocol of a PDDR branch; subclasses implement ``forward`` and ``kernel_bias``."""

    def __init__(self, layer: LayerSpec) -> None:
        super().__init__()
        self.check(layer)
        self.layer = layer

    @classmethod
    def check(cls, layer: LayerSpec) -> None:
        """Raise ``ValueError`` saying why this branch type cannot serve ``layer``."""

    def kernel_bias(self) -> Tuple[Tensor, Tensor]:
        """(out, in / layer groups, kh, kw) kernel and (out, ) bias equal to this branch in eval mode."""
        raise NotImplementedError


def _window_offset(size: Tuple[int, int], layer: LayerSpec) -> Tuple[int, int]:
    """Padding that makes a kernel of ``size`` sample the centre of the layer's window (negative: crop)."""
    return tuple(p - d * ((kf - k) // 2)
                 for k, kf, p, d in zip(size, layer.kernel_size, layer.padding, layer.dilation))


class ConvBN(nn.Module):
    """A bias-free conv of ``size`` (centred in the layer's window) and ``groups``, then its own BN."""

    def __init__(self, layer: LayerSpec, size: Tuple[int, int], groups: int) -> None:
        super().__init__()
        offset = _window_offset(size, layer)
        self.crop = tuple(max(-o, 0) for o in offset)
        self.window, self.layer_groups = layer.kernel_size, layer.groups
        self.conv = nn.Conv2d(layer.in_channels, layer.out_channels, size, layer.stride,
                              tuple(max(o, 0) for o in offset), layer.dilation, groups, bias=False)
        self.bn = build_norm_layer(layer.norm_cfg, layer.out_channels)[1]

    def forward(self, x: Tensor) -> Tensor:
        ch, cw = self.crop
        if ch or cw:
            x = x[..., ch:x.shape[-2] - ch, cw:x.shape[-1] - cw]
        return self.bn(self.conv(x))

    def kernel_bias(self) -> Tuple[Tensor, Tensor]:
        kernel, bias = fold_bn(self.conv.weight, self.bn)
        return to_layer_groups(pad_to_window(kernel, self.window), self.conv.groups, self.layer_groups), bias


@BRANCHES.register_module(name='standard')
class StandardBranch(Branch):
    """A kxk conv with the layer's own grouping, and a BN."""

    def __init__(self, layer: LayerSpec) -> None:
        super().__init__(layer)
        self.conv_bn = ConvBN(layer, layer.kernel_size, layer.groups)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_bn(x)

    def kernel_bias(self) -> Tuple[Tensor, Tensor]:
        return self.conv_bn.kernel_bias()


@BRANCHES.register_module(name='group')
class GroupBranch(StandardBranch):
    """A kxk conv with ``branch_groups`` groups (a multiple of the layer's), and a BN."""

    def __init__(self, layer: LayerSpec) -> None:
        Branch.__init__(self, layer)
        self.conv_bn = ConvBN(layer, layer.kernel_size, layer.branch_groups)

    @classmethod
    def check(cls, layer: LayerSpec) -> None:
        g = layer.branch_groups
        if layer.groups == layer.in_channels:
            raise ValueError('a depthwise layer has no finer grouping for it')
        if not isinstance(g, int) or g < 1 or g % layer.groups or layer.in_channels % g or layer.out_channels % g:
            raise ValueError(f'branch_groups={g!r} must be a multiple of the layer\'s groups ({layer.groups}) and '
                             f'divide in_channels={layer.in_channels} and out_channels={layer.out_channels}')


@BRANCHES.register_module(name='skeleton')
class SkeletonBranch(Branch):
    """The asymmetric pair: a kx1 and a 1xk conv with the layer's grouping, each with its own BN, summed."""

    def __init__(self, layer: LayerSpec) -> None:
        super().__init__(layer)
        kh, kw = layer.kernel_size
        self.ver = ConvBN(layer, (kh, 1), layer.groups)
        self.hor = ConvBN(layer, (1, kw), layer.groups)

    @classmethod
    def check(cls, layer: LayerSpec) -> None:
        if min(layer.kernel_size) < 3:
            raise ValueError(f'it needs a window of at least 3x3, the layer has {layer.kernel_size}')

    def forward(self, x: Tensor) -> Tensor:
        return self.ver(x) + self.hor(x)

    def kernel_bias(self) -> Tuple[Tensor, Tensor]:
        (kv, bv), (kh, bh) = self.ver.kernel_bias(), self.hor.kernel_bias()
        # kv is a new tensor (check() keeps the window >= 3 wide, so pad_to_window pads it): add in place
        return kv.add_(kh), bv + bh


@BRANCHES.register_module(name='pointwise')
class PointwiseBranch(StandardBranch):
    """A 1x1 conv with the layer's grouping and a BN, centred in the window (RepVGG's 1x1 branch)."""

    def __init__(self, layer: LayerSpec) -> None:
        Branch.__init__(self, layer)
        self.conv_bn = ConvBN(layer, (1, 1), layer.groups)

    @classmethod
    def check(cls, layer: LayerSpec) -> None:
        if tuple(layer.kernel_size) == (1, 1):
            raise ValueError('the layer is 1x1 already: it would repeat the standard branch')


@BRANCHES.register_module(name='identity')
class IdentityBranch(Branch):
    """A BN alone on the layer's input (RepVGG's identity branch)."""

    def __init__(self, layer: LayerSpec) -> None:
        super().__init__(layer)
        ph, pw = _window_offset((1, 1), layer)
        self.pad = (pw, pw, ph, ph)  # negative values crop
        self.bn = build_norm_layer(layer.norm_cfg, layer.out_channels)[1]

    @classmethod
    def check(cls, layer: LayerSpec) -> None:
        if layer.in_channels != layer.out_channels or tuple(layer.stride) != (1, 1):
            raise ValueError(f'it needs in_channels == out_channels and stride 1, the layer has '
                             f'{layer.in_channels}->{layer.out_channels} and stride {layer.stride}')

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(F.pad(x, self.pad) if any(self.pad) else x)

    def kernel_bias(self) -> Tuple[Tensor, Tensor]:
        kernel = identity_kernel(self.layer.out_channels, self.layer.groups, self.layer.kernel_size,
                                 self.bn.running_var)
        return fold_bn(kernel, self.bn)


def _split_cfg(cfg: BranchCfg) -> Tuple[str, Dict]:
    if isinstance(cfg, str):
        return cfg, {}
    if isinstance(cfg, dict) and isinstance(cfg.get('type'), str):
        kwargs = dict(cfg)
        return kwargs.pop('type'), kwargs
    raise ValueError(f"a branch is a registered name or a dict(type=name, ...), got {cfg!r}")


def branch_class(cfg: BranchCfg) -> type:
    name, _ = _split_cfg(cfg)
    cls = BRANCHES.get(name)
    if cls is None:
        raise ValueError(f'unknown branch type {name!r}: registered types are {sorted(BRANCHES.module_dict)} '
                         '(register your own with @pddr_mm.ops.BRANCHES.register_module())')
    return cls


def branch_name(cfg: BranchCfg) -> str:
    return _split_cfg(cfg)[0]


def build_branch(cfg: BranchCfg, layer: LayerSpec) -> Branch:
    """Build one branch for ``layer``; a branch that cannot serve it raises ValueError naming it and why."""
    name, kwargs = _split_cfg(cfg)
    cls = branch_class(cfg)
    try:
        return cls(layer, **kwargs)
    except ValueError as e:
        raise ValueError(f"branch {name!r} cannot serve this layer ({layer.describe()}): {e}") from e


def check_branch_list(branches: Sequence[BranchCfg]) -> None:
    """Raise ValueError unless ``branches`` is a non-empty sequence of branch types (a lone name or dict
    would otherwise be read character by character, or key by key)."""
    if isinstance(branches, (str, dict)) or not isinstance(branches, Sequence) or len(branches) == 0:
        raise ValueError(f'branches must be a non-empty sequence of branch types, got {branches!r}')


def filter_branches(branches: Sequence[BranchCfg], *args, **kwargs) -> Tuple[tuple, List[Tuple[BranchCfg, str]]]:
    """The branches that can serve a layer, and (branch, reason) for each that cannot.

    The layer is given as ``LayerSpec.create`` takes it: ``in_channels, out_channels, kernel_size, stride=1,
    padding=0, dilation=1, groups=1, norm_cfg=None, branch_groups=64``.
    """
    layer = LayerSpec.create(*args, **kwargs)
    kept, dropped = [], []
    for cfg in branches:
        cls = branch_class(cfg)  # an unknown type is an error, not a branch that no layer can take
        try:
            cls.check(layer)
        except ValueError as e:
            dropped.append((cfg, str(e)))
        else:
            kept.append(cfg)
    return tuple(kept), dropped
