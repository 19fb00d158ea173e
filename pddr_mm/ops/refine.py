"""The refinement module of PD-B: per-sample softmax weights over the branches."""
import torch
import torch.nn as nn
from torch import Tensor


class Refinement(nn.Module):
    """Global average pool -> FC(C, C/reduction) -> ReLU -> FC(num_branches) -> softmax.

    It reads the layer's input, so the weights (and in deployment the fused kernel) depend only on
    what the layer sees, never on the other samples of the batch.
    """

    def __init__(self, channels: int, num_branches: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, num_branches)

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.fc2(self.act(self.fc1(self.pool(x).flatten(1)))), dim=1)
