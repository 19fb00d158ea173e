"""PD-RetinaHead: mmdet's RetinaHead whose cls/reg tower convs are PDConv2d."""
import torch.nn as nn
from mmdet.models.dense_heads import RetinaHead
from mmengine.registry import MODELS

from ...ops import PDArgs
from ..pd_layers import to_pd_conv_module


@MODELS.register_module()
class PDRetinaHead(RetinaHead):
    """RetinaHead (every argument kept) with PDDR ``cls_convs``/``reg_convs``.

    Takes RetinaHead's arguments and the PDDR ones (:class:`pddr_mm.ops.PDArgs`). The final
    ``retina_cls``/``retina_reg`` predictors stay plain. The tower's branch BNs use the head's
    ``norm_cfg`` when it has one and plain BN otherwise.
    """

    def __init__(self, *args, **kwargs) -> None:
        # _init_layers runs inside RetinaHead.__init__, so the PDDR arguments must be set first
        object.__setattr__(self, 'pd_args', PDArgs.pop_from(kwargs))
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        super()._init_layers()
        self.cls_convs = nn.ModuleList(to_pd_conv_module(m, self.pd_args) for m in self.cls_convs)
        self.reg_convs = nn.ModuleList(to_pd_conv_module(m, self.pd_args) for m in self.reg_convs)
