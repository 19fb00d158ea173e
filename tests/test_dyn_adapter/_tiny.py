"""Builders shared by the Dyn-Adapter tests."""
import torch
from mmpretrain.registry import MODELS

import pddr_mm  # noqa: F401  (registers Dyn-Adapter)

ARCH = dict(embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64)
NUM_CLASSES = 5


def vit_cfg(**kwargs) -> dict:
    return dict(type='VisionTransformer', arch=ARCH, img_size=32, patch_size=4, **kwargs)


def build(exit_indices=(1, 3), randomize=True, seed=0, **kwargs):
    """A DynAdapterClassifier in eval mode whose adapters do something (their up-projections start at
    zero, which would hide a block run without its adapter)."""
    torch.manual_seed(seed)
    cfg = dict(type='DynAdapterClassifier', backbone=vit_cfg(), head=dict(num_classes=NUM_CLASSES),
               exit_indices=exit_indices)
    cfg.update(kwargs)
    model = MODELS.build(cfg)
    model.init_weights()
    if randomize:
        with torch.no_grad():
            for p in model.adapters.parameters():
                p.normal_(std=0.2)
    return model.eval()


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
