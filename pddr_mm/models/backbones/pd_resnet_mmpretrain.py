"""PD-ResNet for mmpretrain: mmpretrain's ResNet whose residual-block 3x3 convs are PDConv2d.

Registered as ``PDResNet`` in mmpretrain's MODELS, so that ``type='PDResNet'`` in an mmpretrain config
(default scope ``mmpretrain``) behaves as mmpretrain's ``ResNet`` does: every argument and default of it
is kept (BN trains, ``norm_eval=False``; ``zero_init_residual=True``; ``out_indices=(3, )``;
``drop_path_rate``; its Kaiming/Constant ``init_cfg``), plus the PDDR arguments of ``pd_args``. The
PD block rule and the plain-checkpoint loading are shared with mmdet's PDResNet (``pd_resnet``).
"""
import inspect
from typing import Callable

from mmpretrain.models.backbones.resnet import BasicBlock, Bottleneck, ResLayer, ResNet
from mmpretrain.registry import MODELS

from ..pd_layers import pd_args
from .pd_resnet import PDBlockMixin, PDResNetMixin

# the PDDR arguments, their order and defaults: exactly pd_args' (one place to add one)
_PD_PARAMS = tuple(inspect.signature(pd_args).parameters.values())


class PDBasicBlock(PDBlockMixin, BasicBlock):
    """mmpretrain's BasicBlock (``drop_path_rate`` and all) with conv1 and conv2 as PDConv2d."""
    PD_CONVS = ('conv1', 'conv2')


class PDBottleneck(PDBlockMixin, Bottleneck):
    """mmpretrain's Bottleneck (``drop_path_rate`` and all) with the 3x3 conv2 as PDConv2d."""
    PD_CONVS = ('conv2', )


def _with_pd_params(init: Callable, base_init: Callable) -> Callable:
    """Give ``init`` (``(self, depth, *args, **kwargs)``) the signature of ``base_init`` plus the PDDR
    arguments as keyword-only parameters, for introspection (deployment.configs checks for ``deploy``)."""
    sig = inspect.signature(base_init)
    params = [p for p in sig.parameters.values() if p.kind != p.VAR_KEYWORD]
    params += [p.replace(kind=p.KEYWORD_ONLY) for p in _PD_PARAMS]
    init.__signature__ = sig.replace(parameters=params)
    return init


@MODELS.register_module(name='PDResNet')
class PDResNet(PDResNetMixin, ResNet):
    """mmpretrain's ResNet (every argument and default kept) with PDDR residual blocks.

    Every 3x3 conv of the residual blocks (BasicBlock conv1/conv2, Bottleneck conv2) is a PDConv2d whose
    branch BNs, built with ``norm_cfg``, replace that conv's BN. The PDDR arguments are ``pd_args``'
    (``mode``, ``branches``, ``branch_groups``, ``reduction``, ``forward_path``, ``deploy``). A plain
    ResNet checkpoint loads directly (``PDResNetMixin``). ``zero_init_residual`` zeroes, as mmpretrain
    does, the last norm of each block: Bottleneck's ``norm3``, and for BasicBlock the branch BNs of
    conv2, which replace ``norm2``.
    """

    arch_settings = {
        18: (PDBasicBlock, (2, 2, 2, 2)),
        34: (PDBasicBlock, (3, 4, 6, 3)),
        50: (PDBottleneck, (3, 4, 6, 3)),
        101: (PDBottleneck, (3, 4, 23, 3)),
        152: (PDBottleneck, (3, 8, 36, 3))
    }

    def __init__(self, depth: int, *args, **kwargs) -> None:
        # make_res_layer runs inside ResNet.__init__, so the PDDR arguments must be set first
        pd = {p.name: kwargs.pop(p.name) for p in _PD_PARAMS if p.name in kwargs}
        object.__setattr__(self, 'pd_kwargs', pd_args(**pd))
        super().__init__(depth, *args, **kwargs)

    def make_res_layer(self, **kwargs) -> ResLayer:
        return ResLayer(pd_kwargs=self.pd_kwargs, **kwargs)

    def init_weights(self) -> None:
        super().init_weights()  # zero_init_residual: norm3 of Bottlenecks; BasicBlock's norm2 is Identity
        if self.zero_init_residual and not (isinstance(self.init_cfg, dict)
                                            and self.init_cfg['type'] == 'Pretrained'):
            for m in self.modules():
                if isinstance(m, PDBasicBlock):
                    m.zero_init_pd_residual_()


_with_pd_params(PDResNet.__init__, ResNet.__init__)
