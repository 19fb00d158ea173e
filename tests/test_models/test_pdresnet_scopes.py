"""``type='PDResNet'`` behaves as the ResNet of the scope it is built in.

mmpretrain's own ResNet configs and an mmdet ResNet config, with only the backbone type swapped to
PDResNet, build that library's ResNet itself (converted by ``convert_to_pd``) with every argument and
default carried over: the stored ``__init__`` values, BN training mode after ``train()`` (mmpretrain trains its
BNs, mmdet's ``norm_eval=True`` freezes them), frozen stages, mmpretrain's ``drop_path_rate`` and the
``zero_init_residual`` start. Scope-less builds get mmdet's ResNet, as before.
"""
import inspect

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope
from torch.nn.modules.batchnorm import _BatchNorm

import pddr_mm  # noqa: F401
from pddr_mm.deployment.configs import is_pddr_module_cfg, plain_model_cfg
from pddr_mm.models.backbones import pd_resnet
from pddr_mm.ops import PDConv2d

PRETRAIN_CONFIGS = ['resnet/resnet18_8xb32_in1k.py', 'resnet/resnet50_8xb32_in1k.py']
MMDET_CONFIG = 'retinanet/retinanet_r50_fpn_1x_coco.py'


def _scope_cfg(tmp_path, scope: str, rel: str) -> Config:
    """A library's own config, loaded through a file inheriting from it (``Config.fromfile('scope::...')``
    does not resolve the package prefix at top level)."""
    path = tmp_path / f'{scope}_{rel.replace("/", "_")}'
    path.write_text(f"_base_ = '{scope}::{rel}'\n")
    return Config.fromfile(str(path))


def _registry(scope: str):
    if scope == 'mmpretrain':
        from mmpretrain.registry import MODELS
        from mmpretrain.utils import register_all_modules
    else:
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    return MODELS


def _build(scope: str, cfg: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope(scope):
        return _registry(scope).build(cfg)


def _base_resnet(scope: str):
    if scope == 'mmpretrain':
        from mmpretrain.models.backbones.resnet import ResNet
    else:
        from mmdet.models.backbones.resnet import ResNet
    return ResNet


def _stored_args(model: nn.Module, base) -> dict:
    """The values of ``base.__init__``'s arguments that the built backbone stores as attributes."""
    names = [n for n in inspect.signature(base.__init__).parameters if n != 'self']
    return {n: getattr(model, n) for n in names if hasattr(model, n)}


def _bn_modes(model: nn.Module) -> set:
    return {m.training for m in model.modules() if isinstance(m, _BatchNorm)}


def _residual_out_norms(block: nn.Module):
    """The BN weights that end a block's residual branch: norm3 (Bottleneck), norm2 (plain BasicBlock) or
    the branch BNs of a PD BasicBlock's conv2 (they replace norm2)."""
    last = block.norm3 if hasattr(block, 'norm3') else block.norm2
    if isinstance(last, nn.Identity):
        return [m.weight for m in block.conv2.modules() if isinstance(m, _BatchNorm)]
    return [last.weight]


def _blocks(model: nn.Module):
    return [b for name in model.res_layers for b in getattr(model, name)]


def _stem(model: nn.Module) -> nn.Module:
    return model.stem if model.deep_stem else nn.ModuleList([model.conv1, model.norm1])


def _check_same_backbone(scope: str, plain: nn.Module, pd: nn.Module) -> None:
    base = _base_resnet(scope)
    assert type(plain) is base and type(pd) is base
    pd_args = _stored_args(pd, base)
    zero_init = [dict(type='PDZeroInitResidual')]  # BasicBlocks' norm2 is conv2's branch BNs (see pd_resnet)
    plain_init = plain.init_cfg if isinstance(plain.init_cfg, list) else [plain.init_cfg]
    assert pd_args.pop('init_cfg') in (plain.init_cfg, [c for c in plain_init if c] + zero_init)
    assert {k: v for k, v in _stored_args(plain, base).items() if k != 'init_cfg'} == pd_args
    assert len(_blocks(plain)) == len(_blocks(pd))
    assert sum(isinstance(m, PDConv2d) for m in pd.modules()) == sum(
        2 if not hasattr(b, 'conv3') else 1 for b in _blocks(plain))
    # the arguments that are not stored: in_channels (the stem's), mmpretrain's drop_path_rate (per block)
    first_conv = [m for m in _stem(plain).modules() if isinstance(m, nn.Conv2d)][0]
    assert first_conv.in_channels == [m for m in _stem(pd).modules() if isinstance(m, nn.Conv2d)][0].in_channels
    if scope == 'mmpretrain':
        drop = [getattr(b.drop_path, 'drop_prob', 0.0) for b in _blocks(plain)]
        assert drop == [getattr(b.drop_path, 'drop_prob', 0.0) for b in _blocks(pd)]
    # train(): the same BN modes and frozen parameters (norm_eval, frozen_stages)
    for model in (plain, pd):
        model.train()
    assert _bn_modes(plain) == _bn_modes(pd)
    parts = [('stem', _stem)] + [(f'layer{i}', lambda m, i=i: getattr(m, f'layer{i}'))
                                 for i in range(1, plain.num_stages + 1)]
    for name, part in parts:
        assert _bn_modes(part(plain)) == _bn_modes(part(pd)), name
        frozen = {not p.requires_grad for p in part(plain).parameters()}
        assert frozen == {not p.requires_grad for p in part(pd).parameters()}, name


def _check_zero_init(plain: nn.Module, pd: nn.Module) -> None:
    """After init_weights, the residual branches end in zero-weight BNs exactly where the plain ones do."""
    for model in (plain, pd):
        model.init_weights()
    plain_zero = [all(bool((w == 0).all()) for w in _residual_out_norms(b)) for b in _blocks(plain)]
    pd_zero = [all(bool((w == 0).all()) for w in _residual_out_norms(b)) for b in _blocks(pd)]
    assert plain_zero == pd_zero


# ---------------------------------------------------------------------------------------------- mmpretrain
@pytest.mark.parametrize('rel', PRETRAIN_CONFIGS)
def test_mmpretrain_config_swap_keeps_every_argument(tmp_path, rel):
    cfg = _scope_cfg(tmp_path, 'mmpretrain', rel)
    backbone = cfg.model.backbone.to_dict()
    assert backbone['type'] == 'ResNet'
    plain = _build('mmpretrain', backbone)
    pd = _build('mmpretrain', dict(backbone, type='PDResNet'))
    _check_same_backbone('mmpretrain', plain, pd)
    assert pd.norm_eval is False and _bn_modes(pd) == {True}  # a classifier trains its BNs
    assert pd.zero_init_residual is True and pd.frozen_stages == -1 and pd.out_indices == (3, )
    _check_zero_init(plain, pd)

    # the whole classifier of the config, as mmpretrain builds it
    model_cfg = cfg.model.to_dict()
    model_cfg['backbone']['type'] = 'PDResNet'
    model = _build('mmpretrain', model_cfg)
    model.train()
    assert type(model.backbone) is _base_resnet('mmpretrain') and _bn_modes(model.backbone) == {True}
    assert sum(isinstance(m, PDConv2d) for m in model.backbone.modules()) > 0
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 32, 32))
    assert feats[-1].shape == (1, plain.feat_dim)


@pytest.mark.parametrize('depth', [18, 50])
@pytest.mark.parametrize('overrides', [
    dict(drop_path_rate=0.1),
    dict(norm_eval=True, frozen_stages=2),
    dict(zero_init_residual=False, out_indices=(1, 3), strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)),
    dict(deep_stem=True, avg_down=True, stem_channels=32, base_channels=16),
    dict(init_cfg=dict(type='Kaiming', layer='Conv2d'), with_cp=True),
], ids=['drop_path', 'frozen', 'geometry', 'stem', 'init_cfg'])
def test_mmpretrain_arguments_carry_over(depth, overrides):
    """mmpretrain's arguments (drop_path_rate too) are accepted and act as on the plain ResNet."""
    plain = _build('mmpretrain', dict(type='ResNet', depth=depth, **overrides))
    pd = _build('mmpretrain', dict(type='PDResNet', depth=depth, branch_groups=8, **overrides))
    _check_same_backbone('mmpretrain', plain, pd)
    _check_zero_init(plain, pd)
    if 'drop_path_rate' in overrides:
        probs = [b.drop_path.drop_prob for b in _blocks(pd) if not isinstance(b.drop_path, nn.Identity)]
        assert probs and max(probs) == pytest.approx(0.1)
    x = torch.randn(2, 3, 32, 32)
    plain.eval(), pd.eval()
    with torch.no_grad():
        assert [o.shape for o in plain(x)] == [o.shape for o in pd(x)]


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmdet'])
def test_pd_arguments_reach_every_layer(scope):
    """The PDDR arguments go to every converted layer; anything else is the ResNet's (a typo fails there)."""
    model = _build(scope, dict(type='PDResNet', depth=18, mode='B', reduction=4, branch_groups=8,
                               branches=('standard', 'group')))
    layers = [m for m in model.modules() if isinstance(m, PDConv2d)]
    assert len(layers) == 16
    assert all(m.mode == 'B' and m.reduction == 4 and m.branch_groups == 8 and m.branch_names == ('standard', 'group')
               for m in layers)
    with pytest.raises(TypeError, match='mdoe'):
        _build(scope, dict(type='PDResNet', depth=18, mdoe='B'))
    with pytest.raises(ValueError, match='mode must be one of'):
        _build(scope, dict(type='PDResNet', depth=18, mode='C'))


# ---------------------------------------------------------------------------------------------- mmdet
def test_mmdet_config_swap_keeps_every_argument(tmp_path):
    cfg = _scope_cfg(tmp_path, 'mmdet', MMDET_CONFIG)
    backbone = cfg.model.backbone.to_dict()
    assert backbone['type'] == 'ResNet' and backbone['norm_eval'] is True
    backbone['init_cfg'] = None  # no download
    plain = _build('mmdet', backbone)
    pd = _build('mmdet', dict(backbone, type='PDResNet'))
    _check_same_backbone('mmdet', plain, pd)
    assert _bn_modes(pd) == {False}  # norm_eval=True: detection freezes BN statistics
    assert pd.frozen_stages == 1 and not any(p.requires_grad for p in pd.layer1.parameters())
    _check_zero_init(plain, pd)


@pytest.mark.parametrize('depth', [18, 50])
def test_mmdet_defaults_carry_over(depth):
    plain = _build('mmdet', dict(type='ResNet', depth=depth))
    pd = _build('mmdet', dict(type='PDResNet', depth=depth, branch_groups=8))
    _check_same_backbone('mmdet', plain, pd)
    assert pd.norm_eval is True and pd.zero_init_residual is True and pd.out_indices == (0, 1, 2, 3)
    _check_zero_init(plain, pd)


# ---------------------------------------------------------------------------------------------- registries
def test_one_pdresnet_per_scope():
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    assert ROOT_MODELS.get('PDResNet') is pd_resnet.PDResNet  # scope-less builds: mmdet's, as before
    assert MMDET_MODELS.get('PDResNet') is pd_resnet.PDResNet
    assert MMPRETRAIN_MODELS.get('PDResNet') is pd_resnet.MMPretrainPDResNet
    # what a config with custom_imports=['pddr_mm'] builds through the root registry in each scope
    for scope in ('mmpretrain', 'mmdet'):
        with DefaultScope.overwrite_default_scope(scope):
            model = ROOT_MODELS.build(dict(type='PDResNet', depth=18, branch_groups=8))
            assert type(model) is _base_resnet(scope) and any(isinstance(m, PDConv2d) for m in model.modules())
            # deployment: both are PDDR modules whose plain counterpart is that scope's ResNet
            assert is_pddr_module_cfg(dict(type='PDResNet', depth=18))
            plain = plain_model_cfg(dict(type='PDResNet', depth=18, mode='B', deploy=True))
            assert plain == dict(type='ResNet', depth=18)
            assert type(ROOT_MODELS.build(plain)) is _base_resnet(scope)
