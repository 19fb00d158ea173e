"""The model ring: the only parameters behind RPG's generated kernels, and the record that guards them."""
from typing import Dict, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from .generation import PERMUTATIONS

# what ``record`` holds, in order (int64)
RECORD_FIELDS = ('seed', 'permutation', 'ring_size', 'kernel_elements', 'layout')


class ModelRing(nn.Module):
    """One vector of N parameters per ring (``rings.0``, ``rings.1``, ...) from which the kernels are generated.

    The indices and signs are not stored: they are rebuilt from the seed and the layer shapes when the
    model is built. The persistent ``record`` (seed, scheme, N, T, a checksum of the layer shapes) makes
    loading a checkpoint of another generation an error instead of silently different kernels.

    In the deployed model the ring is dropped (``deploy_module()`` returns None): the generated kernels
    are materialised into plain convolutions first (:func:`pddr_mm.switch_to_deploy`).
    """

    def __init__(self, sizes: Sequence[int], stds: Sequence[float], record: Dict[str, int]) -> None:
        super().__init__()
        self.stds = [float(s) for s in stds]
        self.rings = nn.ParameterList([nn.Parameter(torch.empty(int(n))) for n in sizes])
        self.register_buffer('record', torch.tensor([int(record[k]) for k in RECORD_FIELDS], dtype=torch.long))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal with a kaiming fan-out std of the ring's widest layer (the authors': 512 x 3 x 3 in
        ResNet-18/34); each layer's fixed scale brings its kernel to its own kaiming std."""
        for ring, std in zip(self.rings, self.stds):
            ring.normal_(0, std)

    def forward(self, x: Tensor) -> Tensor:
        """The identity: the ring is a child of the converted network, and an ``nn.Sequential`` calls every
        child in order; it passes the features on."""
        return x

    def deploy_module(self) -> None:
        """Nothing: the deployed network holds the generated kernels, not the ring."""
        return None

    @staticmethod
    def describe(record: Tensor) -> str:
        values = dict(zip(RECORD_FIELDS, record.tolist()))
        perm = values['permutation']
        values['permutation'] = repr(PERMUTATIONS[perm]) if 0 <= perm < len(PERMUTATIONS) else perm
        return ', '.join(f'{k}={v}' for k, v in values.items())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        saved = state_dict.get(prefix + 'record')
        if saved is not None and not torch.equal(saved.to(self.record), self.record):
            raise ValueError(
                f'{prefix}record: the checkpoint was made with another RPG generation ({self.describe(saved)}) than '
                f'this model ({self.describe(self.record)}): its ring would generate different kernels here. Build '
                'the model with the seed, ring_size / ring_ratio, rings, permutation and layers of the checkpoint.')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f'rings={[r.numel() for r in self.rings]}, {self.describe(self.record)}'
