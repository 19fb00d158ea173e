"""The refinement module of PD-B: per-sample softmax weights over the branches."""
import torch
import torch.nn as nn
from torch import Tensor


class Refinement(nn.Module):
    """Global average pool -> FC(C, C / reduction) -> ReLU -> FC(branches) -> softmax(logits / temperature).

    It reads the layer's input, so a sample's weights (and in deployment its kernel) depend on that
    sample alone, never on the rest of the batch. ``temperature`` (a plain attribute, not saved in
    checkpoints) flattens the softmax when above 1; ``PDDRTemperatureHook`` anneals it during training.
    """

    def __init__(self, channels: int, num_branches: int, reduction: int = 16, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f'temperature must be > 0, got {temperature!r}')
        self.temperature = float(temperature)
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, num_branches)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.fc2(torch.relu(self.fc1(x.mean((2, 3)))))
        return torch.softmax(logits / self.temperature if self.temperature != 1 else logits, dim=1)

    def extra_repr(self) -> str:
        return f'temperature={self.temperature:g}'
