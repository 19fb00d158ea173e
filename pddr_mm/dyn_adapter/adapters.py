"""The PETL modules trained inside the frozen ViT blocks: ``Adapter`` (AdaptFormer) and ``LoRA``.

They are attached with forward hooks on the block's own submodules instead of replacing them, so the
backbone keeps mmpretrain's module names and checkpoint keys (``backbone.layers.0.attn.qkv.weight``, ...),
a pretrained ViT loads unchanged, and the adapters are extra keys (``adapters.0.*``) outside the backbone.
mmpretrain's ``LoRAModel`` is not used because it wraps the backbone (``backbone.module.*``) and renames
the replaced linears (``qkv.original_layer``).
"""
import math
from typing import List, Sequence

import torch
import torch.nn as nn
from mmpretrain.registry import MODELS
from torch.utils.hooks import RemovableHandle


class BlockAdapter(nn.Module):
    """A trainable module for one transformer block; ``attach`` hooks it into that block.

    ``drop_rate`` is the dropout on the adapter's bottleneck; the classifier sets it per block (the forward
    half of bidirectional sparsity).
    """

    def __init__(self, drop_rate: float = 0.):
        super().__init__()
        self.dropout = nn.Dropout(drop_rate)

    def set_drop_rate(self, p: float) -> None:
        if not 0. <= p < 1.:
            raise ValueError(f'adapter drop rate must be in [0, 1), got {p}')
        self.dropout.p = float(p)

    def attach(self, layer: nn.Module) -> List[RemovableHandle]:
        raise NotImplementedError

    def flops(self, num_tokens: int) -> int:
        """Multiply-adds spent on ``num_tokens`` tokens (the convention of :mod:`.flops`)."""
        raise NotImplementedError


def _bottleneck(in_dims: int, hidden_dim: int, out_dims: int, bias: bool):
    """down / up projections initialised as in LoRA and AdaptFormer: ``up`` is zero, so the adapted block
    starts computing exactly what the frozen block did."""
    down = nn.Linear(in_dims, hidden_dim, bias=bias)
    up = nn.Linear(hidden_dim, out_dims, bias=bias)
    nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
    nn.init.zeros_(up.weight)
    if bias:
        nn.init.zeros_(down.bias)
        nn.init.zeros_(up.bias)
    return down, up


def _require(layer: nn.Module, path: str, adapter: str) -> nn.Module:
    module = layer
    for name in path.split('.'):
        module = getattr(module, name, None)
        if module is None:
            raise ValueError(f'{adapter} needs each backbone layer to have `{path}` (mmpretrain\'s '
                             f'TransformerEncoderLayer); {type(layer).__name__} has not')
    return module


LINK = '_dyn_adapter'


def _link(module: nn.Module, target) -> None:
    """Let the hook of ``module`` find its adapter. A plain attribute (not a submodule), so the backbone's
    names and state dict stay mmpretrain's; a deep copy of the whole model (EMA, TTA) links the copies."""
    object.__setattr__(module, LINK, target)


def _add_adapter_branch(module, args, kwargs, output):
    # the block calls self.ffn(self.ln2(x), identity=x): args[0] is LN2(x), the output already holds x
    return output + getattr(module, LINK)(args[0])


def _add_low_rank(module, args, output):
    lora, name = getattr(module, LINK)
    return output + lora(args[0], name)


@MODELS.register_module()
class Adapter(BlockAdapter):
    """AdaptFormer's parallel bottleneck on the MLP: ``x + FFN(LN2(x)) + scale * up(act(down(LN2(x))))``.

    Args:
        embed_dims (int): the ViT's width (the classifier fills it in).
        hidden_dim (int): bottleneck width. Defaults to 8.
        scale (float): AdaptFormer's fixed scaling of the branch. Defaults to 0.1.
        drop_rate (float): dropout on the bottleneck. Defaults to 0.
    """

    def __init__(self, embed_dims: int, hidden_dim: int = 8, scale: float = 0.1, drop_rate: float = 0.):
        super().__init__(drop_rate)
        if hidden_dim < 1:
            raise ValueError(f'Adapter hidden_dim must be >= 1, got {hidden_dim}')
        self.embed_dims, self.hidden_dim, self.scale = embed_dims, hidden_dim, scale
        self.down, self.up = _bottleneck(embed_dims, hidden_dim, embed_dims, bias=True)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.dropout(self.act(self.down(x)))) * self.scale

    def attach(self, layer: nn.Module) -> List[RemovableHandle]:
        ffn = _require(layer, 'ffn', 'Adapter')
        _link(ffn, self)
        return [ffn.register_forward_hook(_add_adapter_branch, with_kwargs=True)]

    def flops(self, num_tokens: int) -> int:
        return num_tokens * 2 * self.embed_dims * self.hidden_dim


@MODELS.register_module()
class LoRA(BlockAdapter):
    """LoRA on the attention projections: ``W x + (alpha / rank) * B A x`` for each target linear.

    Args:
        embed_dims (int): the ViT's width (the classifier fills it in).
        rank (int): rank of ``B A``. Defaults to 4.
        alpha (float): scale numerator, as in LoRA and mmpretrain's ``LoRALinear``. Defaults to 4.
        targets (Sequence[str]): linears of ``layer.attn`` to adapt. Defaults to ``('qkv', 'proj')``.
        drop_rate (float): dropout on the LoRA input. Defaults to 0.
    """

    def __init__(self, embed_dims: int, rank: int = 4, alpha: float = 4., targets: Sequence[str] = ('qkv', 'proj'),
                 drop_rate: float = 0.):
        super().__init__(drop_rate)
        if rank < 1:
            raise ValueError(f'LoRA rank must be >= 1, got {rank}')
        if not targets:
            raise ValueError('LoRA targets must name at least one linear of the attention, e.g. ("qkv", "proj")')
        self.embed_dims, self.rank, self.scaling, self.targets = embed_dims, rank, alpha / rank, tuple(targets)
        self.lora_down = nn.ModuleDict()
        self.lora_up = nn.ModuleDict()
        self._out_features = {}

    def _build(self, name: str, linear: nn.Linear) -> None:
        down, up = _bottleneck(linear.in_features, self.rank, linear.out_features, bias=False)
        self.lora_down[name], self.lora_up[name] = down, up
        self._out_features[name] = (linear.in_features, linear.out_features)

    def forward(self, x: torch.Tensor, target: str) -> torch.Tensor:
        return self.lora_up[target](self.lora_down[target](self.dropout(x))) * self.scaling

    def attach(self, layer: nn.Module) -> List[RemovableHandle]:
        handles = []
        for name in self.targets:
            linear = _require(layer, f'attn.{name}', 'LoRA')
            if not isinstance(linear, nn.Linear):
                raise ValueError(f'LoRA target attn.{name} must be an nn.Linear, got {type(linear).__name__}')
            if name not in self.lora_down:
                self._build(name, linear)
            _link(linear, (self, name))
            handles.append(linear.register_forward_hook(_add_low_rank))
        return handles

    def flops(self, num_tokens: int) -> int:
        return sum(num_tokens * self.rank * (i + o) for i, o in self._out_features.values())
