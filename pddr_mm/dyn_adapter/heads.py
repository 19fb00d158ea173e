"""The classifiers at the exits: one ``ExitHead`` per exit, "balanced" by default.

Shallow features are weaker, so a balanced set gives the shallow exits heavier heads (an MLP) and the deep
ones light heads (the last one a linear layer), so that shallow exits can compete (the paper's idea; the
depth profile below is ours).
"""
from typing import List, Optional

import torch
import torch.nn as nn
from mmpretrain.registry import MODELS


@MODELS.register_module()
class ExitHead(nn.Module):
    """``[LayerNorm] -> (Linear -> GELU) x hidden_layers -> Linear`` on one exit's feature.

    Args:
        in_channels (int): feature width.
        num_classes (int): output classes.
        hidden_layers (int): MLP layers before the classifier; 0 is a linear head. Defaults to 0.
        hidden_dims (int, optional): MLP width; None: ``in_channels``.
        norm (bool): a LayerNorm of its own first. Early exits need one (the backbone's final norm follows
            the last block only); the last exit reads the backbone's normalised output and has none.
        dropout (float): dropout before the classifier layer. Defaults to 0.
    """

    def __init__(self, in_channels: int, num_classes: int, hidden_layers: int = 0, hidden_dims: Optional[int] = None,
                 norm: bool = True, dropout: float = 0.):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f'head num_classes must be >= 1, got {num_classes}')
        if hidden_layers < 0:
            raise ValueError(f'head hidden_layers must be >= 0, got {hidden_layers}')
        hidden_dims = hidden_dims or in_channels
        self.norm = nn.LayerNorm(in_channels) if norm else nn.Identity()
        layers, width = [], in_channels
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, hidden_dims), nn.GELU()]
            width = hidden_dims
        self.mlp = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.mlp(self.norm(feature))))

    def flops(self) -> int:
        """Multiply-adds per image (one feature vector)."""
        return sum(m.in_features * m.out_features for m in self.modules() if isinstance(m, nn.Linear))


def balanced_hidden_layers(num_exits: int, max_hidden_layers: int) -> List[int]:
    """MLP depth per exit, from ``max_hidden_layers`` at the first exit down to 0 (linear) at the last."""
    if num_exits == 1:
        return [0]
    return [round(max_hidden_layers * (num_exits - 1 - k) / (num_exits - 1)) for k in range(num_exits)]


def build_exit_heads(in_channels: int, num_exits: int, num_classes: int, balanced: bool = True,
                     max_hidden_layers: int = 2, hidden_dims: Optional[int] = None, dropout: float = 0.,
                     **unknown) -> nn.ModuleList:
    """The heads of all exits from the classifier's ``head`` dict (less ``loss``).

    ``balanced=True``: MLP heads whose depth falls linearly from ``max_hidden_layers`` at the first exit
    to a linear head at the last; ``balanced=False``: a linear head at every exit.
    """
    if unknown:
        raise ValueError(f'head got unknown keys {sorted(unknown)}; it takes num_classes, balanced, '
                         'max_hidden_layers, hidden_dims, dropout and loss')
    if max_hidden_layers < 0:
        raise ValueError(f'head max_hidden_layers must be >= 0, got {max_hidden_layers}')
    depths = balanced_hidden_layers(num_exits, max_hidden_layers) if balanced else [0] * num_exits
    return nn.ModuleList(
        ExitHead(in_channels, num_classes, hidden_layers=d, hidden_dims=hidden_dims, norm=k < num_exits - 1,
                 dropout=dropout) for k, d in enumerate(depths))
