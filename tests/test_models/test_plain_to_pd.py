"""A PD-ResNet started from a plain ResNet checkpoint computes what the plain one did (eval mode).

Both start paths (``init_cfg=dict(type='Pretrained')`` and tools/model_converters/plain_to_pd.py), both
namings (torchvision ``layer1.0.conv2.weight`` / mmpretrain ``backbone.layer1.0.conv2.weight``) and
both modes; the plain model has random BN statistics so that a wrong BN mapping cannot hide.
"""
import runpy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner import load_checkpoint

import pddr_mm  # noqa: F401
from pddr_mm.models import find_block_convs
from pddr_mm.ops import PDConv2d
from random_bn import max_rel_error, randomize_bn

CONVERTER = Path(__file__).resolve().parents[2] / 'tools' / 'model_converters' / 'plain_to_pd.py'
TOL = 1e-5


def _torchvision_plain(depth: int, path: Path):
    """A torchvision ResNet with random weights and BN stats, saved in torchvision naming."""
    torch.manual_seed(depth)
    model = getattr(torchvision.models, f'resnet{depth}')(weights=None)
    randomize_bn(model, seed=depth).eval()
    torch.save(model.state_dict(), path)
    features = nn.Sequential(*list(model.children())[:-2])  # up to layer4
    return features


def _mmpretrain_plain(depth: int, path: Path):
    """An mmpretrain ImageClassifier (its own ResNet), saved as a runner checkpoint (backbone./head.)."""
    torch.manual_seed(depth + 1)
    with DefaultScope.overwrite_default_scope('mmpretrain'):  # its data preprocessor is built in scope
        model = MODELS.build(
            dict(type='mmpretrain.ImageClassifier', backbone=dict(type='mmpretrain.ResNet', depth=depth),
                 neck=dict(type='mmpretrain.GlobalAveragePooling'),
                 head=dict(type='mmpretrain.LinearClsHead', num_classes=10,
                           in_channels=512 if depth < 50 else 2048)))
    randomize_bn(model, seed=depth + 1).eval()
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return lambda x: model.backbone(x)[-1]


def _pd_backbone(depth: int, mode: str, init_cfg=None) -> nn.Module:
    model = MODELS.build(dict(type='PDResNet', depth=depth, mode=mode, out_indices=(3, ), norm_eval=False,
                              init_cfg=init_cfg))
    if init_cfg is not None:
        model.init_weights()
    model.eval()  # mmdet's ResNet.train() returns None, so no chaining
    return model


def _convert(src: Path, dst: Path, mode: str) -> None:
    argv = sys.argv
    sys.argv = [str(CONVERTER), str(src), str(dst), '--mode', mode]
    try:
        runpy.run_path(str(CONVERTER), run_name='__main__')
    finally:
        sys.argv = argv


@pytest.mark.parametrize('naming,depth,mode', [
    ('torchvision', 18, 'A'), ('torchvision', 18, 'B'), ('mmpretrain', 18, 'A'), ('mmpretrain', 18, 'B'),
    ('torchvision', 50, 'A'), ('torchvision', 50, 'B')
])
@torch.no_grad()
def test_start_from_plain_checkpoint(tmp_path, naming, depth, mode):
    src = tmp_path / 'plain.pth'
    plain = (_torchvision_plain if naming == 'torchvision' else _mmpretrain_plain)(depth, src)
    prefix = 'backbone.' if naming == 'mmpretrain' else None
    x = torch.randn(2, 3, 64, 64)
    expected = plain(x)

    # path 1: the usual Pretrained init_cfg (mmengine prefix handling for the classifier naming)
    init_cfg = dict(type='Pretrained', checkpoint=str(src))
    if prefix:
        init_cfg['prefix'] = prefix
    pd = _pd_backbone(depth, mode, init_cfg)
    err_init = max_rel_error(pd(x)[-1], expected)

    # path 2: the converter tool, then an ordinary strict load of the converted checkpoint
    dst = tmp_path / 'pd.pth'
    _convert(src, dst, mode)
    pd2 = _pd_backbone(depth, mode)
    converted = torch.load(dst, map_location='cpu')['state_dict']
    if prefix:
        converted = {k[len(prefix):]: v for k, v in converted.items() if k.startswith(prefix)}
    else:
        converted = {k: v for k, v in converted.items() if not k.startswith('fc.')}
    pd2.load_state_dict(converted, strict=True)
    err_tool = max_rel_error(pd2(x)[-1], expected)
    print(f'\n{naming} ResNet-{depth} PD-{mode}: Pretrained rel err {err_init:.3e}, converter rel err {err_tool:.3e}')
    assert err_init <= TOL and err_tool <= TOL

    # the start is a real PDDR state, not a copy of the plain net: fusing it keeps the function
    for m in pd.modules():
        if isinstance(m, PDConv2d):
            m.forward_path = 'branches'
    pddr_mm.switch_to_deploy(pd)
    assert max_rel_error(pd(x)[-1], expected) <= TOL


def test_plain_checkpoint_into_pd_classifier(tmp_path):
    """``load_from``-style loading of a whole plain classifier checkpoint into a PD classifier."""
    src = tmp_path / 'plain.pth'
    plain = _mmpretrain_plain(18, src)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(
            dict(type='mmpretrain.ImageClassifier',
                 backbone=dict(type='PDResNet', depth=18, mode='B', out_indices=(3, )),
                 neck=dict(type='mmpretrain.GlobalAveragePooling'),
                 head=dict(type='mmpretrain.LinearClsHead', num_classes=10, in_channels=512)))
    model.eval()
    load_checkpoint(model, str(src), map_location='cpu', strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert max_rel_error(model.backbone(x)[-1], plain(x)) <= TOL


def test_find_block_convs_skips_1x1_and_stem():
    sd = torchvision.models.resnet50(weights=None).state_dict()
    pairs = find_block_convs(sd)
    assert len(pairs) == 16 and all(p.endswith('conv2.') and n.endswith('bn2.') for p, n in pairs)
    sd18 = {'backbone.' + k: v for k, v in torchvision.models.resnet18(weights=None).state_dict().items()}
    assert len(find_block_convs(sd18)) == 16


def test_no_standard_branch_cannot_start_from_plain(tmp_path):
    src = tmp_path / 'plain.pth'
    _torchvision_plain(18, src)
    model = MODELS.build(dict(type='PDResNet', depth=18, mode='A', branches=('group', 'skeleton'),
                              init_cfg=dict(type='Pretrained', checkpoint=str(src))))
    with pytest.raises(ValueError, match='standard'):
        model.init_weights()
