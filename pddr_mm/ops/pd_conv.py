"""PDConv2d: a convolution trained as parallel branches (PDDR) and deployed as one convolution."""
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from .branches import LayerSpec, branch_class, branch_name, build_branch
from .fusion import bn_scale_shift, full_precision, mixed_conv2d, stacked_conv2d, sum_kernels
from .mixed_conv import MixedConv2d
from .pd_args import PDArgs
from .refine import Refinement

IntOrPair = Union[int, Tuple[int, int]]


def check_norm_cfg(norm_cfg: Dict, num_features: int) -> None:
    """Raise ValueError unless ``norm_cfg`` builds a BatchNorm with running statistics (one that folds)."""
    if not isinstance(norm_cfg, dict) or 'type' not in norm_cfg:
        raise ValueError(f"norm_cfg must be a dict with a 'type', got {norm_cfg!r}")
    try:
        layer = build_norm_layer(norm_cfg, num_features)[1]
    except Exception as e:  # an unknown type, or arguments the layer does not take
        raise ValueError(f'norm_cfg {norm_cfg!r} cannot be built: {e}') from e
    if not isinstance(layer, _BatchNorm) or not layer.track_running_stats:
        raise ValueError(
            f"norm_cfg type {norm_cfg['type']!r} cannot be folded into a convolution: PDConv2d needs a "
            "BatchNorm with running statistics, norm_cfg type must be one of 'BN', 'BN2d' or 'SyncBN'")


@MODELS.register_module()
class PDConv2d(BaseModule):
    """A convolution trained as parallel branches (PDDR) and fused into one for inference.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups: as ``nn.Conv2d``; any
            odd kernel size, grouped and depthwise layers included.
        bias: ``True`` adds a learnable bias after the branches (it folds into the fused bias).
        norm_cfg: the branch BNs; only BatchNorm variants (BN, SyncBN) fold into a convolution.
        **pd_args: the PDDR arguments (:class:`pddr_mm.ops.PDArgs`): ``mode``, ``branches``,
            ``branch_groups``, ``reduction``, ``temperature``, ``forward_path`` and ``deploy``. With
            ``deploy=True`` the deploy form is built directly: ``fused`` is an ``nn.Conv2d`` (PD-A) or a
            ``MixedConv2d`` (PD-B), and no branch is built.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: IntOrPair,
                 stride: IntOrPair = 1,
                 padding: IntOrPair = 0,
                 dilation: IntOrPair = 1,
                 groups: int = 1,
                 bias: Union[bool, str] = False,
                 norm_cfg: Optional[Dict] = None,
                 init_cfg: Optional[Union[Dict, List[Dict]]] = None,
                 **pd_args) -> None:
        if init_cfg is None:
            init_cfg = [dict(type='Kaiming', layer='Conv2d'), dict(type='Constant', val=1, bias=0, layer='_BatchNorm')]
        super().__init__(init_cfg)
        pd = PDArgs.create('PDConv2d', pd_args)
        self.layer = LayerSpec.create(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                                      norm_cfg, pd.branch_groups)
        self._validate(pd, bias)
        # the attributes of nn.Conv2d that mmcv's ConvModule and FLOP counters read
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = self.layer.kernel_size, self.layer.stride
        self.padding, self.dilation = self.layer.padding, self.layer.dilation
        self.transposed, self.output_padding = False, (0, 0)
        self.mode, self.branch_cfgs = pd.mode, pd.branches
        self.branch_names = tuple(branch_name(b) for b in pd.branches)
        self.branch_groups, self.norm_cfg, self.reduction = pd.branch_groups, self.layer.norm_cfg, pd.reduction
        self.forward_path, self.deploy = pd.forward_path, pd.deploy
        if self.deploy:
            self.fused = self._deploy_module(pd.temperature)
        else:
            self.branches = nn.ModuleList(build_branch(b, self.layer) for b in self.branch_cfgs)
            self.refine = Refinement(in_channels, len(self.branch_cfgs), pd.reduction, pd.temperature) \
                if self.mode == 'B' else None
            self.bias = nn.Parameter(torch.zeros(out_channels)) if bias is True else None

    def _validate(self, pd: PDArgs, bias) -> None:
        """The layer's own checks (the PDDR arguments checked themselves in PDArgs)."""
        layer = self.layer
        if any(k < 1 or k % 2 == 0 for k in layer.kernel_size):
            raise ValueError(f'kernel_size must be odd (a centre to align the branches on), got {layer.kernel_size}')
        if min(layer.stride + layer.dilation) < 1 or min(layer.padding) < 0:
            raise ValueError(f'stride and dilation must be >= 1 and padding >= 0, got stride={layer.stride}, '
                             f'dilation={layer.dilation}, padding={layer.padding}')
        if layer.in_channels < 1 or layer.out_channels < 1:
            raise ValueError(f'in_channels and out_channels must be >= 1, got {layer.in_channels}, '
                             f'{layer.out_channels}')
        if not isinstance(layer.groups, int) or layer.groups < 1 or layer.in_channels % layer.groups \
                or layer.out_channels % layer.groups:
            raise ValueError(f'groups={layer.groups!r} must divide in_channels={layer.in_channels} and '
                             f'out_channels={layer.out_channels}')
        if bias not in (True, False, 'auto'):
            raise ValueError(f"bias must be True, False or 'auto', got {bias!r}")
        check_norm_cfg(layer.norm_cfg, layer.out_channels)
        for cfg in pd.branches:  # the deploy form builds no branch: check them here for both forms
            try:
                branch_class(cfg).check(layer)
            except ValueError as e:
                raise ValueError(f'branch {branch_name(cfg)!r} cannot serve this layer ({layer.describe()}): {e}') \
                    from e

    def _deploy_module(self, temperature: float) -> nn.Module:
        layer = self.layer
        geometry = (layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                    layer.dilation, layer.groups)
        if self.mode == 'A':
            return nn.Conv2d(*geometry, bias=True)
        return MixedConv2d(*geometry, len(self.branch_cfgs), self.reduction, temperature)

    @property
    def refinement(self) -> Optional[Refinement]:
        """The PD-B refinement module (``refine``, or ``fused.refine`` once deployed); None for PD-A."""
        if self.mode != 'B':
            return None
        return self.fused.refine if self.deploy else self.refine

    # ------------------------------------------------------------------ fusion
    def branch_kernels(self) -> Tensor:
        """Each branch's equivalent kernel, (branches, out, in / groups, kh, kw), as ``MixedConv2d``'s.

        Differentiable; needs every branch BN in eval mode.
        """
        return torch.stack([kernel for kernel, _ in self._kernels_biases()])

    def _kernels_biases(self) -> List[Tuple[Tensor, Tensor]]:
        return [branch.kernel_bias() for branch in self.branches]

    def kernel_bias(self) -> Tuple[Tensor, Tensor]:
        """The layer's equivalent kernel and bias, as each branch's ``kernel_bias`` (what the deploy form
        holds): PD-A one kernel and bias; PD-B the branch kernels (branches, out, ...) and biases
        (branches, out) that the refinement mixes. The layer's bias rides on every PD-B branch bias: the
        mixing weights sum to 1. Differentiable; needs every branch BN in eval mode.
        """
        kernels, biases = zip(*self._kernels_biases())
        if self.mode == 'A':
            kernel, bias = sum_kernels(kernels), sum_kernels(biases)
        else:
            kernel, bias = torch.stack(kernels), torch.stack(biases)
        return kernel, bias if self.bias is None else bias + self.bias

    def _bn_layers(self) -> List[_BatchNorm]:
        return [m for m in self.branches.modules() if isinstance(m, _BatchNorm)]

    def _use_fused_path(self) -> bool:
        if self.forward_path == 'branches':
            return False
        frozen = not any(bn.training for bn in self._bn_layers())
        if self.forward_path in ('fused', 'stacked') and not frozen:
            raise RuntimeError(f"forward_path={self.forward_path!r} needs every branch BN in eval mode (frozen): BN "
                               "in training mode normalises with batch statistics, which have no fixed fold")
        return frozen

    @torch.no_grad()
    def switch_to_deploy(self) -> bool:
        """Replace the branches by the deploy form, in place. Returns False if already deployed."""
        if self.deploy:
            return False
        if self.training or any(bn.training for bn in self._bn_layers()):
            raise RuntimeError('PDConv2d is in training mode: train-mode BN has no fixed fold. '
                               'Call model.eval() before switch_to_deploy().')
        kernel, bias = self.kernel_bias()
        fused = self._deploy_module(self.refine.temperature if self.refine is not None else 1.0).to(kernel)
        fused.weight.copy_(kernel.flatten(0, 1) if self.mode == 'B' else kernel)
        fused.bias.copy_(bias)
        if self.mode == 'B':
            fused.refine.load_state_dict(self.refine.state_dict())
        del self.branches, self.refine, self.bias
        self.fused = fused.eval()
        self.deploy = True
        return True

    @torch.no_grad()
    def fold_following_bn(self, bn: _BatchNorm) -> None:
        """Fold an eval-mode BN applied right after this deployed layer into it:
        ``BN(conv(x, K) + b) == conv(x, K * scale) + b * scale + shift``, per output channel. PD-B scales
        every branch kernel and bias and adds ``shift`` to every branch bias: the mixing weights sum to 1.
        """
        if not self.deploy:
            raise RuntimeError('fold_following_bn needs the deploy form: call switch_to_deploy() first')
        scale, shift = bn_scale_shift(bn)
        if scale.numel() != self.out_channels:
            raise ValueError(f'a BN over {scale.numel()} channels cannot follow a layer with {self.out_channels} '
                             'output channels')
        weight, bias = self.fused.weight, self.fused.bias
        rows = weight.reshape((-1, self.out_channels) + weight.shape[1:])  # (branches, out, ...) for PD-B
        weight.copy_((rows * scale.reshape(-1, 1, 1, 1).to(weight)).reshape(weight.shape))
        bias.copy_(bias * scale.to(bias) + shift.to(bias))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # a training checkpoint in a deploy model (or the reverse) would otherwise half-load silently
        keys = [k[len(prefix):] for k in state_dict if k.startswith(prefix)]
        has_branches = any(k.startswith('branches.') for k in keys)
        has_fused = any(k.startswith('fused.') for k in keys)
        where = prefix[:-1] or 'PDConv2d'
        if self.deploy and has_branches and not has_fused:
            raise RuntimeError(
                f'{where}: the model is built in deploy (fused) form but the checkpoint holds training '
                'branches. Convert the checkpoint first: python tools/model_converters/reparameterize.py CONFIG CHECKPOINT, then use '
                'the deploy config and checkpoint it writes (or build the model without deploy=True).')
        if not self.deploy and has_fused and not has_branches:
            raise RuntimeError(
                f'{where}: the checkpoint holds fused (deploy) weights but the model is built with training '
                'branches. Use the deploy config written by tools/model_converters/reparameterize.py (deploy=True); fused weights '
                'cannot be split back into branches.')
        if not has_branches and not has_fused and 'weight' in keys:
            raise RuntimeError(
                f'{where}: the checkpoint holds a plain convolution here. Only PDResNet and PDDRBackbone start '
                'from plain weights (their plain conv + BN goes into the branches; offline: '
                'tools/model_converters/plain_to_pd.py); a PDFPN, PDRetinaHead or conv_cfg layer has no plain '
                "start. Load the plain weights into the backbone only, e.g. init_cfg=dict(type='Pretrained', "
                "prefix='backbone.', checkpoint=...) on the backbone, and let this layer start from its init_cfg.")
        refine = 'fused.refine.' if has_fused else 'refine.'
        if (has_branches or has_fused) and any(k.startswith(refine) for k in keys) != (self.mode == 'B'):
            found = 'B' if self.mode == 'A' else 'A'
            raise RuntimeError(
                f"{where}: the checkpoint holds a PD-{found} layer here (refinement weights "
                f"{'present' if found == 'B' else 'absent'}) but the model is built with mode={self.mode!r}. "
                f"Use the config the checkpoint was trained with (mode={found!r}); to start PD-{self.mode} from "
                'it, start from the plain network instead.')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        if self.deploy:
            return self.fused(x)
        layer = self.layer
        if self._use_fused_path():
            with full_precision(x):
                kernel, bias = self.kernel_bias()
            if self.mode == 'A':
                return F.conv2d(x, kernel, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
            conv = stacked_conv2d if self.forward_path == 'stacked' else mixed_conv2d
            return conv(x, self.refine(x), kernel, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
        # summed in place: a fresh activation-sized tensor per add costs memory, and BN saves its input,
        # not its output, for backward
        outs = [branch(x) for branch in self.branches]
        if self.mode == 'A':
            out = outs[0]
            for o in outs[1:]:
                out = out.add_(o)
        else:
            weights = self.refine(x).to(outs[0].dtype)  # float32 softmax under autocast: keep its dtype
            out = outs[0] * weights[:, :1, None, None]
            for i, o in enumerate(outs[1:], 1):
                out = out.addcmul_(o, weights[:, i:i + 1, None, None])
        return out if self.bias is None else out.add_(self.bias.reshape(1, -1, 1, 1))

    def extra_repr(self) -> str:
        s = (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, '
             f'padding={self.padding}, dilation={self.dilation}, groups={self.groups}, mode={self.mode!r}')
        return s + (', deploy=True' if self.deploy else f', branches={self.branch_names}')
