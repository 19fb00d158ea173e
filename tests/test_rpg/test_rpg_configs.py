"""configs/rpg: every config parses into an RPGBackbone, and the ring-1/8 ResNet-18 has the README's counts."""
import glob
import os.path as osp

from mmengine.config import Config

from pddr_mm.deployment.checkpoint import build_model
from pddr_mm.deployment.configs import to_plain_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_every_rpg_config_parses_into_an_rpg_backbone_with_a_plain_baseline():
    paths = sorted(glob.glob(osp.join(ROOT, 'configs', 'rpg', '*.py')))
    assert len(paths) == 5
    for path in paths:
        cfg = Config.fromfile(path)
        assert cfg.model.backbone.type == 'RPGBackbone', path
        assert to_plain_config(cfg).model.backbone == cfg.model.backbone.backbone


def test_resnet18_ring_one_eighth_counts_as_the_readme_says():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'rpg', 'rpg-resnet18_ring-1-8_8xb32_in1k.py'))
    cfg.model.backbone.trace_shape = (32, 32)
    model = build_model(cfg)
    report = model.backbone.rpg_report
    assert (report['kernel_elements'], report['ring_size']) == (11157504, 1394688)
    assert list(report['plain']) == ['conv1'] and len(report['converted']) == 19
    assert sum(p.numel() for p in model.parameters()) == 1926696
    assert sum(p.numel() for p in build_model(to_plain_config(cfg)).parameters()) == 11689512
