"""PD-FPN: mmdet's FPN whose 3x3 output convs (``fpn_convs``, extra convs included) are PDConv2d."""
from typing import Sequence

import torch.nn as nn
from mmdet.models.necks import FPN
from mmengine.registry import MODELS

from ...ops import DEFAULT_BRANCHES
from ..pd_layers import pd_args, to_pd_conv_module


@MODELS.register_module()
class PDFPN(FPN):
    """FPN (every argument kept) with PDDR ``fpn_convs``; the lateral 1x1 convs stay plain.

    The branch BNs use the FPN's ``norm_cfg`` when it has one and plain BN otherwise (FPN's default
    has no norm: its conv bias is then carried by the branch BNs' shifts).
    """

    def __init__(self,
                 *args,
                 mode: str = 'A',
                 branches: Sequence[str] = DEFAULT_BRANCHES,
                 branch_groups: int = 64,
                 reduction: int = 16,
                 temperature: float = 1.0,
                 forward_path: str = 'auto',
                 deploy: bool = False,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pd_kwargs = pd_args(mode, branches, branch_groups, reduction, temperature, forward_path, deploy)
        self.fpn_convs = nn.ModuleList(to_pd_conv_module(m, self.pd_kwargs) for m in self.fpn_convs)
