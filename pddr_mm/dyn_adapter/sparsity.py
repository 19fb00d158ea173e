"""Bidirectional sparsity: dropout that is higher in shallow blocks (forward) and random masking of the
adapters' gradient updates (backward). The paper names both; the placement and the defaults are ours:
the dropout acts inside the adapters (the frozen backbone keeps the dropouts of its own config) and
falls linearly with depth; the gradient mask zeroes each adapter gradient entry with a fixed probability
at every backward pass, unscaled, so a masked entry simply is not updated at that step.
"""
from typing import List, Optional

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle


def _check_rate(value: float, name: str) -> float:
    if not 0. <= value < 1.:
        raise ValueError(f'sparsity {name} must be in [0, 1), got {value}')
    return float(value)


class BidirectionalSparsity:
    """What ``sparsity=dict(...)`` of ``DynAdapterClassifier`` configures (``sparsity=None``: off).

    Args:
        drop_shallow (float): adapter dropout in the first block. Defaults to 0.1.
        drop_deep (float): adapter dropout in the last block (linear in between). Defaults to 0.
        grad_mask (float): probability that an adapter gradient entry is zeroed at a step. Defaults to 0.1.
    """

    def __init__(self, drop_shallow: float = 0.1, drop_deep: float = 0., grad_mask: float = 0.1):
        self.drop_shallow = _check_rate(drop_shallow, 'drop_shallow')
        self.drop_deep = _check_rate(drop_deep, 'drop_deep')
        self.grad_mask = _check_rate(grad_mask, 'grad_mask')

    def drop_rates(self, num_layers: int) -> List[float]:
        if num_layers == 1:
            return [self.drop_shallow]
        a, b = self.drop_shallow, self.drop_deep
        # interpolated, not accumulated: 0.1 + 11 * (-0.1 / 11) is -1e-17, which nn.Dropout refuses
        return [min(max(a + (b - a) * i / (num_layers - 1), 0.), 1.) for i in range(num_layers)]

    def mask_gradients(self, module: nn.Module) -> List[RemovableHandle]:
        """Hook every parameter of ``module`` so that its gradient is randomly masked."""
        if self.grad_mask == 0:
            return []
        keep = 1. - self.grad_mask

        def mask(grad: torch.Tensor) -> torch.Tensor:
            return grad * torch.bernoulli(torch.full_like(grad, keep))

        return [p.register_hook(mask) for p in module.parameters() if p.requires_grad]


def build_sparsity(cfg: Optional[dict]) -> Optional[BidirectionalSparsity]:
    if cfg is None or cfg is False:
        return None
    if not isinstance(cfg, dict):
        raise ValueError(f'sparsity must be a dict (drop_shallow, drop_deep, grad_mask) or None, got {cfg!r}')
    try:
        return BidirectionalSparsity(**cfg)
    except TypeError as e:
        raise ValueError(f'sparsity: {e}; it takes drop_shallow, drop_deep, grad_mask') from None
