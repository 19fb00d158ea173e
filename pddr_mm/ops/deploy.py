"""Model-level fusion: one call turns any model that holds PDDR layers into its deploy form."""
import torch.nn as nn

from .pd_conv import PDConv2d


def switch_to_deploy(model: nn.Module) -> int:
    """Fuse every PDDR layer of ``model`` in place and return how many were fused now.

    Works on detectors, classifiers and wrapped models (DDP and mmengine wrappers expose the wrapped
    model through ``modules()``). Already fused layers are skipped, so a second call returns 0. The
    model must be in eval mode: train-mode BN has no fixed fold.
    """
    return sum(int(m.switch_to_deploy()) for m in list(model.modules()) if isinstance(m, PDConv2d))


def is_deployed(model: nn.Module) -> bool:
    """True if ``model`` holds PDDR layers and all of them are fused."""
    layers = [m for m in model.modules() if isinstance(m, PDConv2d)]
    return bool(layers) and all(m.deployed for m in layers)
