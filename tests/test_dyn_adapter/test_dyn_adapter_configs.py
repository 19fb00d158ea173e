"""Every config of configs/dyn_adapter/ parses and builds its model (backbones without their checkpoints);
the Dyn-Adapter ones take a training step's forward."""
import glob
import math
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import pddr_mm  # noqa: F401

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'dyn_adapter', '*.py')))


def test_the_study_and_the_vit_b_configs_are_all_here():
    names = {osp.basename(c) for c in CONFIGS}
    assert {'dyn-adapter_vit-b16_vtab-1k.py', 'dyn-adapter-lora_vit-b16_vtab-1k.py', 'vit-tiny-p4_shapes-cls.py',
            'dyn-adapter_vit-tiny-p4_shapes-cls-hard.py', 'adapter_vit-tiny-p4_shapes-cls-hard.py',
            'linear-probe_vit-tiny-p4_shapes-cls-hard.py', 'full-ft_vit-tiny-p4_shapes-cls-hard.py'} <= names


@pytest.mark.parametrize('config', CONFIGS, ids=osp.basename)
def test_config_builds(config):
    cfg = Config.fromfile(config)
    assert cfg.custom_imports.imports == ['pddr_mm']
    cfg.model.backbone.pop('init_cfg', None)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    if cfg.model.type != 'DynAdapterClassifier':
        return
    assert len(model.adapters) in (0, len(model.backbone.layers))
    metrics = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
    assert any(m['type'] == 'ExitMetric' for m in metrics)
    name = osp.basename(config)
    if name.startswith('dyn-adapter'):  # the Dyn-Adapter ones: several exits, the weight schedule, sparsity
        assert model.num_exits == 4 and model.sparsity is not None and model.exit_threshold == 0.9
        assert [h['type'] for h in cfg.custom_hooks] == ['ExitLossWeightHook']
    else:  # the study's one-head baselines
        assert model.num_exits == 1 and model.sparsity is None and model.exit_threshold is None
    assert (name.startswith('linear-probe')) == (len(model.adapters) == 0)
    model.train()
    inputs = torch.randn(2, model.backbone.patch_embed.projection.in_channels, *model.backbone.img_size)
    labels = [DataSample().set_gt_label(0), DataSample().set_gt_label(1)]
    losses = model(inputs, labels, mode='loss')
    assert len(losses) == model.num_exits and all(math.isfinite(v.item()) for v in losses.values())
