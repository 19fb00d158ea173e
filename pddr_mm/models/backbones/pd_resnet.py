"""PD-ResNet: mmdet's ResNet whose residual-block 3x3 convs are PDConv2d (PD-A or PD-B)."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from mmdet.models.layers import ResLayer
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from ...ops import DEFAULT_BRANCHES, PDConv2d
from ..pd_layers import pd_args
from .plain_to_pd import plain_to_pd_layer

_DCN_ERROR = ('PDResNet does not support dcn: a deformable conv has no fixed kernel to fuse branches into. '
              'Remove dcn/stage_with_dcn from the backbone config (or use plain ResNet for DCN stages).')


def _pd_conv(inplanes: int, planes: int, norm_cfg: Dict, pd_kwargs: Dict, **geometry) -> PDConv2d:
    return PDConv2d(inplanes, planes, 3, bias=False, norm_cfg=norm_cfg, **geometry, **pd_kwargs)


class PDBasicBlock(BasicBlock):
    """BasicBlock with conv1 and conv2 as PDConv2d; their branch BNs replace ``bn1``/``bn2``."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1, *args,
                 norm_cfg: Dict = dict(type='BN'), dcn: Optional[Dict] = None, pd_kwargs: Dict = None,
                 **kwargs) -> None:
        if dcn is not None:
            raise ValueError(_DCN_ERROR)
        super().__init__(inplanes, planes, stride, dilation, *args, norm_cfg=norm_cfg, **kwargs)
        pd_kwargs = pd_kwargs or pd_args()
        self.conv1 = _pd_conv(inplanes, planes, norm_cfg, pd_kwargs, stride=stride, padding=dilation,
                              dilation=dilation)
        self.add_module(self.norm1_name, nn.Identity())
        self.conv2 = _pd_conv(planes, planes, norm_cfg, pd_kwargs, padding=1)  # as mmdet: no dilation
        self.add_module(self.norm2_name, nn.Identity())
        self.zero_init_pd_residual = False

    def plain_pairs(self) -> List[Tuple[str, str]]:
        """(PDConv2d name, the plain norm it replaces) inside this block."""
        return [('conv1', self.norm1_name), ('conv2', self.norm2_name)]

    def init_weights(self) -> None:
        super().init_weights()
        if self.zero_init_pd_residual and not getattr(self.conv2, 'deployed', False):
            # zero_init_residual: the block starts as identity; norm2 is now conv2's branch BNs
            with torch.no_grad():
                for m in self.conv2.modules():
                    if isinstance(m, _BatchNorm):
                        m.weight.zero_()


class PDBottleneck(Bottleneck):
    """Bottleneck with the 3x3 conv2 as PDConv2d; its branch BNs replace ``bn2``."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1, *args,
                 norm_cfg: Dict = dict(type='BN'), dcn: Optional[Dict] = None, pd_kwargs: Dict = None,
                 **kwargs) -> None:
        if dcn is not None:
            raise ValueError(_DCN_ERROR)
        super().__init__(inplanes, planes, stride, dilation, *args, norm_cfg=norm_cfg, **kwargs)
        pd_kwargs = pd_kwargs or pd_args()
        self.conv2 = _pd_conv(planes, planes, norm_cfg, pd_kwargs, stride=self.conv2_stride, padding=dilation,
                              dilation=dilation)
        self.add_module(self.norm2_name, nn.Identity())

    def plain_pairs(self) -> List[Tuple[str, str]]:
        return [('conv2', self.norm2_name)]


@MODELS.register_module()
class PDResNet(ResNet):
    """mmdet's ResNet (every argument kept) with PDDR residual blocks.

    Every 3x3 conv of the residual blocks (BasicBlock conv1/conv2, Bottleneck conv2) is a PDConv2d whose
    branch BNs, built with ``norm_cfg``, replace that conv's BN. The PDDR arguments are PDConv2d's:
    ``mode``, ``branches``, ``branch_groups``, ``reduction``, ``temperature``, ``forward_path``, ``deploy``.

    A plain ResNet checkpoint (torchvision/mmdet/mmpretrain naming) loads directly, e.g. through
    ``init_cfg=dict(type='Pretrained', checkpoint=...)``: its block convs and BNs are mapped to an
    equivalent PDDR state on the fly (``plain_to_pd_layer``), so the network starts computing exactly
    what the plain one did (in eval mode).
    """

    arch_settings = {
        18: (PDBasicBlock, (2, 2, 2, 2)),
        34: (PDBasicBlock, (3, 4, 6, 3)),
        50: (PDBottleneck, (3, 4, 6, 3)),
        101: (PDBottleneck, (3, 4, 23, 3)),
        152: (PDBottleneck, (3, 8, 36, 3))
    }

    def __init__(self,
                 depth: int,
                 *args,
                 dcn: Optional[Dict] = None,
                 mode: str = 'A',
                 branches: Sequence[str] = DEFAULT_BRANCHES,
                 branch_groups: int = 64,
                 reduction: int = 16,
                 temperature: float = 1.0,
                 forward_path: str = 'auto',
                 deploy: bool = False,
                 **kwargs) -> None:
        if dcn is not None:
            raise ValueError(_DCN_ERROR)
        # make_res_layer runs inside ResNet.__init__, so the PDDR arguments must be set first
        object.__setattr__(self, 'pd_kwargs', pd_args(mode, branches, branch_groups, reduction, temperature,
                                                      forward_path, deploy))
        super().__init__(depth, *args, **kwargs)
        self._set_zero_init_residual(kwargs)

    def make_res_layer(self, **kwargs) -> ResLayer:
        return ResLayer(pd_kwargs=self.pd_kwargs, **kwargs)

    def _set_zero_init_residual(self, kwargs: Dict) -> None:
        # mmdet picks the block init by identity (``block is BasicBlock``), which misses the PD blocks:
        # apply the same rule (only when no init_cfg/pretrained is given), with BasicBlock's norm2 being
        # conv2's branch BNs
        if not (self.zero_init_residual and kwargs.get('init_cfg') is None and kwargs.get('pretrained') is None):
            return
        for name in self.res_layers:
            for block in getattr(self, name):
                if isinstance(block, PDBottleneck):
                    block.init_cfg = dict(type='Constant', val=0, override=dict(name='norm3'))
                else:
                    block.zero_init_pd_residual = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # a plain checkpoint holds conv weights where the PDConv2d are: map them before the children load
        for layer_name in self.res_layers:
            for idx, block in enumerate(getattr(self, layer_name)):
                block_prefix = f'{prefix}{layer_name}.{idx}.'
                for conv_name, norm_name in block.plain_pairs():
                    conv = getattr(block, conv_name)
                    conv_prefix = f'{block_prefix}{conv_name}.'
                    if (conv.deployed or conv_prefix + 'weight' not in state_dict
                            or any(k.startswith(conv_prefix + 'branches.') for k in state_dict)):
                        continue
                    template = {conv_prefix + k: v for k, v in conv.state_dict().items()}
                    plain_to_pd_layer(state_dict, conv_prefix, f'{block_prefix}{norm_name}.', conv.mode,
                                      conv.branch_cfgs, conv.branch_groups, self.pd_kwargs['reduction'],
                                      template=template)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
