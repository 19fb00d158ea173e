"""Module-tree editing shared by the conversions and the deploy switch."""
from typing import Optional

import torch.nn as nn


def set_module(model: nn.Module, name: str, module: Optional[nn.Module]) -> None:
    """Put ``module`` at ``name`` inside ``model`` (None: remove what is there)."""
    parent_name, _, attr = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    if module is None:
        delattr(parent, attr)
    else:
        setattr(parent, attr, module)  # ModuleList / Sequential children are attributes '0', '1', ...
