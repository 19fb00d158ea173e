"""The refinement module of PD-B: per-sample softmax weights over the branches."""
import torch
import torch.nn as nn
from torch import Tensor


class Refinement(nn.Module):
    """Global average pool -> FC(C, C / reduction) -> ReLU -> FC(branches) -> softmax(logits / temperature).

    It reads the layer's input, so a sample's weights (and in deployment its kernel) depend on that
    sample alone, never on the rest of the batch. Its weights are float32 for a half-precision input.
    ``temperature`` flattens the softmax when above 1;
    ``PDDRTemperatureHook`` anneals it during training. It is held in a non-persistent buffer (not saved in
    checkpoints): a compiled model reads a tensor, so changing it every iteration recompiles nothing.
    """

    def __init__(self, channels: int, num_branches: int, reduction: int = 16, temperature: float = 1.0) -> None:
        super().__init__()
        self.register_buffer('_temperature', torch.tensor(1.0), persistent=False)
        self.temperature = temperature
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, num_branches)

    @property
    def temperature(self) -> float:
        return float(self._temperature)

    @temperature.setter
    def temperature(self, value: float) -> None:
        if not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f'temperature must be a number > 0, got {value!r}')
        self._temperature.fill_(float(value))

    def forward(self, x: Tensor) -> Tensor:
        logits = self.fc2(torch.relu(self.fc1(x.mean((2, 3))))) / self._temperature
        # the weights in float32 under mixed precision (as CUDA's autocast does for softmax anyway): the
        # layers cast them to their activations' dtype, the fusion math uses them in float32
        low_precision = logits.dtype in (torch.float16, torch.bfloat16)
        return torch.softmax(logits, dim=1, dtype=torch.float32 if low_precision else None)

    def extra_repr(self) -> str:
        return f'temperature={self.temperature:g}'
