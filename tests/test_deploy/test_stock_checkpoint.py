"""reparameterize.py on PD-A and RPG models: a plain config and checkpoint that stock mmdet / mmpretrain load
without pddr_mm.

The plain model is built, loaded strictly and run in a subprocess that never imports pddr_mm; its
output must match the fused PDDR model's. Random BN statistics, so a bias in the wrong place shows.
"""
import subprocess
import sys

import numpy as np
import pytest
import torch
from deploy_fixtures import load_tool, write_config
from mmcv.cnn import ConvModule
from mmengine.config import Config
from mmengine.model import BaseModule
from mmengine.registry import MODELS

from pddr_mm.deployment.checkpoint import build_model
from pddr_mm.deployment.models import tensor_forward
from pddr_mm.utils import flatten_tensors, max_rel_error
from random_bn import randomize_bn

reparameterize = load_tool('model_converters/reparameterize')

HEAD = dict(num_classes=2, in_channels=16, feat_channels=16, stacked_convs=1,
            anchor_generator=dict(strides=[8, 16, 32]))
NECK = dict(in_channels=[16, 32, 64], out_channels=16, start_level=0, num_outs=3, add_extra_convs=False)
RESNET = dict(depth=18, base_channels=8, stem_channels=8, out_indices=(1, 2, 3), init_cfg=None)
PD = dict(mode='A', branch_groups=4)


def retinanet(mode: str = 'A', **model) -> str:
    pd = dict(PD, mode=mode)
    return f'''
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['pddr_mm'], allow_failed_imports=False)
custom_hooks = [dict(type='PDDRDeployHook')]
model = dict(
    backbone={model['backbone'](pd)!r},
    neck={model['neck'](pd)!r},
    bbox_head={model['bbox_head'](pd)!r})
'''


DETECTORS = {
    # PDDRBackbone over ResNet (its BNs become nn.Identity), PDFPN (plain fpn_convs have a bias),
    # a PDConv2d conv_cfg in RetinaHead's ConvModules, each followed by its BN
    'pddr_backbone-pdfpn-convcfg_head': dict(
        backbone=lambda pd: dict(_delete_=True, type='PDDRBackbone', trace_shape=(32, 32), **pd,
                                 backbone=dict(type='ResNet', **RESNET)),
        neck=lambda pd: dict(type='PDFPN', **NECK, **pd),
        bbox_head=lambda pd: dict(**HEAD, norm_cfg=dict(type='BN'), conv_cfg=dict(type='PDConv2d', **pd))),
    # PDResNet (BN after each block conv replaced), PDRetinaHead with norm_cfg: the plain head's ConvModules
    # have a BN the PDDR head does not hold (it starts as identity), plain FPN with a PDConv2d conv_cfg (bias;
    # its lateral 1x1 convs too, where a skeleton branch does not fit)
    'pdresnet-convcfg_fpn-pdhead': dict(
        backbone=lambda pd: dict(type='PDResNet', **RESNET, **pd),
        neck=lambda pd: dict(**NECK, conv_cfg=dict(type='PDConv2d', branches=('standard', 'group'), **pd)),
        bbox_head=lambda pd: dict(type='PDRetinaHead', **HEAD, norm_cfg=dict(type='BN'), **pd)),
    # RPGBackbone: its convolutions generated from a ring, materialised into plain ones (the PD arguments unused)
    'rpg_backbone': dict(
        backbone=lambda pd: dict(_delete_=True, type='RPGBackbone', trace_shape=(32, 32), ring_ratio=0.25,
                                 permutation='block', backbone=dict(type='ResNet', **RESNET)),
        neck=lambda pd: dict(**NECK),
        bbox_head=lambda pd: dict(**HEAD)),
}

# mmpretrain's PDResNet (its blocks' BNs replaced) in an ImageClassifier
CLASSIFIER = f'''
custom_imports = dict(imports=['pddr_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(type='PDResNet', depth=18, base_channels=8, stem_channels=8, **{PD!r}),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=3, in_channels=64))
'''
CLASSIFIERS = {
    'mmpretrain_pdresnet': CLASSIFIER,
    # mmpretrain's ResNet under RPGBackbone (the authors' 'full' permutation)
    'mmpretrain_rpg': CLASSIFIER.replace(
        f"backbone=dict(type='PDResNet', depth=18, base_channels=8, stem_channels=8, **{PD!r})",
        "backbone=dict(type='RPGBackbone', ring_ratio=0.25, trace_shape=(32, 32), "
        "backbone=dict(type='ResNet', depth=18, base_channels=8, stem_channels=8))"),
}

# run in a fresh interpreter outside the repository: stock mmengine / mmdet only
STOCK_RUN = '''
import sys
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import load_checkpoint
cfg_path, ckpt_path, in_path, out_path = sys.argv[1:]
cfg = Config.fromfile(cfg_path)
init_default_scope(cfg.default_scope)
model = MODELS.build(cfg.model).eval()
load_checkpoint(model, ckpt_path, map_location='cpu', strict=True)
with torch.no_grad():
    out = model(torch.load(in_path), mode='tensor')


def flat(x):
    return [x] if isinstance(x, torch.Tensor) else [t for v in x for t in flat(v)]


torch.save(flat(out), out_path)
assert not any(m == 'pddr_mm' or m.startswith('pddr_mm.') for m in sys.modules), 'pddr_mm was imported'
'''


def train_checkpoint(tmp_path, name: str, text: str) -> tuple:
    cfg_path = write_config(str(tmp_path / f'{name}.py'), text)
    torch.manual_seed(0)
    model = randomize_bn(build_model(Config.fromfile(cfg_path)), 1)
    ckpt = str(tmp_path / f'{name}.pth')
    # a runner's meta may hold numpy values, which torch's safe loader refuses without pddr_mm's allow-list
    meta = dict(epoch=2, seed=np.int64(5), dataset_meta=dict(classes=('a', 'b'), scale=np.ones(2)))
    torch.save(dict(meta=meta, state_dict=model.state_dict()), ckpt)
    return cfg_path, ckpt


@pytest.mark.parametrize('name', [*DETECTORS, *CLASSIFIERS])
def test_pd_a_and_rpg_models_ship_as_stock_checkpoint(tmp_path, name, capsys):
    text = CLASSIFIERS[name] if name in CLASSIFIERS else retinanet(**DETECTORS[name])
    cfg_path, ckpt = train_checkpoint(tmp_path, name, text)
    out_dir = tmp_path / 'out'
    deploy_cfg, deploy_ckpt = reparameterize.main([cfg_path, ckpt, '--out-dir', str(out_dir)])
    plain_cfg, plain_ckpt = str(out_dir / f'{name}_plain.py'), str(out_dir / f'{name}_plain.pth')
    assert f'python tools/test.py {plain_cfg} {plain_ckpt}' in capsys.readouterr().out

    text = open(plain_cfg).read()
    assert 'pddr_mm' not in text and "type='PD" not in text and 'PDDRDeployHook' not in text and 'RPG' not in text
    plain_types = ('ResNet', ) if name in CLASSIFIERS else ('ResNet', 'FPN', 'RetinaHead')
    assert all(f"type='{t}'" in text for t in plain_types)

    fused = build_model(Config.fromfile(deploy_cfg)).eval()
    fused.load_state_dict(torch.load(deploy_ckpt)['state_dict'])
    inputs = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    expected = flatten_tensors(tensor_forward(fused, dict(inputs=inputs)))
    torch.save(inputs, tmp_path / 'inputs.pt')
    result = subprocess.run([sys.executable, '-c', STOCK_RUN, plain_cfg, plain_ckpt, str(tmp_path / 'inputs.pt'),
                             str(tmp_path / 'out.pt')], cwd=str(tmp_path), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    actual = torch.load(tmp_path / 'out.pt')
    meta = torch.load(plain_ckpt, weights_only=True)['meta']
    assert meta['seed'] == 5 and meta['dataset_meta']['scale'] == [1.0, 1.0]
    assert meta['pddr_plain']['plain_error'] < 1e-5
    assert len(actual) == len(expected) == (1 if name in CLASSIFIERS else 6)
    for a, e in zip(actual, expected):
        assert max_rel_error(a, e) <= 1e-5


def test_pd_b_keeps_only_the_deploy_config(tmp_path, capsys):
    name = 'pdresnet-convcfg_fpn-pdhead'
    cfg_path, ckpt = train_checkpoint(tmp_path, name, retinanet('B', **DETECTORS[name]))
    reparameterize.main([cfg_path, ckpt, '--out-dir', str(tmp_path)])
    out = capsys.readouterr().out
    assert 'no plain checkpoint: ' in out and 'PD-B layers' in out and 'per sample' in out
    assert (tmp_path / f'{name}_deploy.py').exists() and not (tmp_path / f'{name}_plain.py').exists()


@MODELS.register_module(force=True)
class NoBiasNet(BaseModule):
    """A conv with neither bias nor BN after it: a fused PD-A bias has no place in its plain form."""

    def __init__(self, conv_cfg=None, init_cfg=None) -> None:
        super().__init__(init_cfg)
        self.conv = ConvModule(3, 8, 3, padding=1, bias=False, conv_cfg=conv_cfg, norm_cfg=None)

    def forward(self, x):
        return (self.conv(x), )


def test_pd_a_model_whose_plain_form_cannot_take_the_bias(tmp_path, capsys):
    text = CLASSIFIER.replace("imports=['pddr_mm']", "imports=['pddr_mm', 'test_stock_checkpoint']").replace(
        f"dict(type='PDResNet', depth=18, base_channels=8, stem_channels=8, **{PD!r})",
        "dict(type='NoBiasNet', conv_cfg=dict(type='PDConv2d', mode='A', branches=('standard', 'skeleton')))").replace(
        'in_channels=64', 'in_channels=8')
    cfg_path, ckpt = train_checkpoint(tmp_path, 'nobias', text)
    reparameterize.main([cfg_path, ckpt, '--out-dir', str(tmp_path)])
    out = capsys.readouterr().out
    assert 'no plain checkpoint: the plain model of this config cannot take the fused weights: backbone.conv.conv: ' \
        'the plain Conv2d has no bias' in out
    assert (tmp_path / 'nobias_deploy.pth').exists() and not (tmp_path / 'nobias_plain.pth').exists()
