"""PD-ResNet: a ResNet whose residual-block 3x3 convs are PDConv2d (PD-A or PD-B).

One PDResNet per OpenMMLab scope, each keeping every argument and default of that library's ResNet:
this module's, built on mmdet's ResNet, is registered in mmdet's MODELS and in mmengine's root registry
(scope-less builds); ``pd_resnet_mmpretrain`` builds the same on mmpretrain's ResNet for mmpretrain's
MODELS (BN trains by default, ``drop_path_rate``, ...). What they share lives here: the PD block rule
(``PDBlockMixin``) and the loading of plain checkpoints (``PDResNetMixin``).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from mmdet.models.layers import ResLayer
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from ...ops import DEFAULT_BRANCHES, PDConv2d
from ..pd_layers import pd_args
from .plain_to_pd import plain_to_pd_layer

_DCN_ERROR = ('PDResNet does not support dcn: a deformable conv has no fixed kernel to fuse branches into. '
              'Remove dcn/stage_with_dcn from the backbone config (or use plain ResNet for DCN stages).')


def _pd_conv(inplanes: int, planes: int, norm_cfg: Dict, pd_kwargs: Dict, **geometry) -> PDConv2d:
    return PDConv2d(inplanes, planes, 3, bias=False, norm_cfg=norm_cfg, **geometry, **pd_kwargs)


class PDBlockMixin:
    """The PD form of a residual block, whatever library its plain class comes from (mmdet, mmpretrain).

    Each 3x3 conv named in ``PD_CONVS`` becomes a PDConv2d of the same geometry (channels, stride,
    padding, dilation) and the norm after it (``convN`` -> ``normN_name``) an ``nn.Identity``: the
    PDConv2d's branch BNs, built with ``norm_cfg``, take its place.
    """
    PD_CONVS: Tuple[str, ...] = ()
    zero_init_pd_residual = False  # set by a PDResNet whose zero_init_residual applies (mmdet)

    def __init__(self, *args, norm_cfg: Dict = dict(type='BN'), pd_kwargs: Optional[Dict] = None,
                 **kwargs) -> None:
        if kwargs.get('dcn') is not None:
            raise ValueError(_DCN_ERROR)
        super().__init__(*args, norm_cfg=norm_cfg, **kwargs)
        self._to_pd(norm_cfg, pd_kwargs)

    def _to_pd(self, norm_cfg: Dict, pd_kwargs: Optional[Dict]) -> None:
        pd_kwargs = pd_kwargs or pd_args()
        for conv_name, norm_name in self.plain_pairs():
            plain = getattr(self, conv_name)
            setattr(self, conv_name, _pd_conv(plain.in_channels, plain.out_channels, norm_cfg, pd_kwargs,
                                              stride=plain.stride, padding=plain.padding,
                                              dilation=plain.dilation))
            self.add_module(norm_name, nn.Identity())

    def plain_pairs(self) -> List[Tuple[str, str]]:
        """(PDConv2d name, the plain norm it replaces) inside this block."""
        return [(conv, getattr(self, f'norm{conv[4:]}_name')) for conv in self.PD_CONVS]  # convN -> normN

    def zero_init_pd_residual_(self) -> None:
        """zero_init_residual for a block whose last norm is a PDConv2d's branch BNs (BasicBlock's norm2):
        zero their weights, so the block starts as identity."""
        conv = getattr(self, self.PD_CONVS[-1])
        if getattr(conv, 'deployed', False):
            return
        with torch.no_grad():
            for m in conv.modules():
                if isinstance(m, _BatchNorm):
                    m.weight.zero_()

    def init_weights(self) -> None:
        super().init_weights()
        if self.zero_init_pd_residual:
            self.zero_init_pd_residual_()


class PDBasicBlock(PDBlockMixin, BasicBlock):
    """mmdet's BasicBlock with conv1 and conv2 as PDConv2d; their branch BNs replace ``bn1``/``bn2``."""
    PD_CONVS = ('conv1', 'conv2')


class PDBottleneck(PDBlockMixin, Bottleneck):
    """mmdet's Bottleneck with the 3x3 conv2 as PDConv2d; its branch BNs replace ``bn2``."""
    PD_CONVS = ('conv2', )


class PDResNetMixin:
    """What a PDResNet adds to its library's ResNet besides the PD blocks: a plain ResNet checkpoint
    (torchvision/mmdet/mmpretrain naming) loads directly, e.g. through
    ``init_cfg=dict(type='Pretrained', checkpoint=...)`` or ``load_from``: its block convs and BNs are
    mapped to an equivalent PDDR state on the fly (``plain_to_pd_layer``), so the network starts computing
    exactly what the plain one did (in eval mode). Needs ``self.pd_kwargs`` (``pd_args(...)``)."""

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


@MMDET_MODELS.register_module()
@MODELS.register_module()
class PDResNet(PDResNetMixin, ResNet):
    """mmdet's ResNet (every argument and default kept, e.g. ``norm_eval=True``) with PDDR residual blocks.

    Registered in mmdet's MODELS and in mmengine's root registry; in the mmpretrain scope ``PDResNet`` is
    ``pd_resnet_mmpretrain.PDResNet``, built on mmpretrain's ResNet.

    Every 3x3 conv of the residual blocks (BasicBlock conv1/conv2, Bottleneck conv2) is a PDConv2d whose
    branch BNs, built with ``norm_cfg``, replace that conv's BN. The PDDR arguments are PDConv2d's:
    ``mode``, ``branches``, ``branch_groups``, ``reduction``, ``forward_path``, ``deploy``.

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
