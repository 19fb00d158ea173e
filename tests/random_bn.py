"""Test helper: random BN statistics (the identity initialisation of a BN hides fold bugs)."""
from typing import Optional

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from pddr_mm.utils import max_rel_error  # noqa: F401  (the tests import both from here)


@torch.no_grad()
def randomize_bn(model: nn.Module, seed: Optional[int] = 0) -> nn.Module:
    """Give every BN random running statistics and affine parameters, in place."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            if m.affine:
                m.weight.copy_(torch.rand(n, generator=gen) * 1.5 + 0.25)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.5)
    return model
