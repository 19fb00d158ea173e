"""PD-FPN: mmdet's FPN whose 3x3 output convs (``fpn_convs``, extra convs included) are PDConv2d."""
import torch.nn as nn
from mmdet.models.necks import FPN
from mmengine.registry import MODELS

from ...ops import PDArgs
from ..pd_layers import to_pd_conv_module


@MODELS.register_module()
class PDFPN(FPN):
    """FPN (every argument kept) with PDDR ``fpn_convs``; the lateral 1x1 convs stay plain.

    Takes FPN's arguments and the PDDR ones (:class:`pddr_mm.ops.PDArgs`: ``mode``, ``branches``, ...).
    The branch BNs use the FPN's ``norm_cfg`` when it has one and plain BN otherwise (FPN's default
    has no norm: its conv bias is then carried by the branch BNs' shifts).
    """

    def __init__(self, *args, **kwargs) -> None:
        pd = PDArgs.pop_from(kwargs)
        super().__init__(*args, **kwargs)
        self.pd_args = pd
        self.fpn_convs = nn.ModuleList(to_pd_conv_module(m, pd) for m in self.fpn_convs)
