"""The refinement module of PD-B: per-sample softmax weights over the branches."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from . import fusion


class Refinement(nn.Module):
    """Global average pool -> FC(C, C/reduction) -> ReLU -> FC(num_branches) -> softmax.

    It reads the layer's input, so the weights (and in deployment the fused kernel) depend only on
    what the layer sees, never on the other samples of the batch. The pool and ReLU are calls, not
    submodules: at batch 1 on CPU each module call cost about as much as its op. CPU inference runs the
    same computation as one C++ call (``csrc/refine.cpp``): its five torch ops cost about 2.5 ms per
    deployed ResNet-18 forward there, their code cold after every convolution.
    """

    def __init__(self, channels: int, num_branches: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, num_branches)

    def forward(self, x: Tensor) -> Tensor:
        if not torch.is_grad_enabled() and x.is_contiguous():
            ext = fusion.use_cpu_ext([x, self.fc1.weight])
            if ext is not None:
                return ext.refine_weights(x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
        hidden = F.linear(x.mean((2, 3)), self.fc1.weight, self.fc1.bias).relu_()
        return torch.softmax(F.linear(hidden, self.fc2.weight, self.fc2.bias), dim=1)
