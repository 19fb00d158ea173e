"""A short real run of the RPG demo RetinaNet (configs/demo/retinanet_r18-rpg_shapes.py): it trains a few
iterations through the ring, then tests deployed as the plain detector (PDDRDeployHook checks the outputs)."""
import math
import os.path as osp

import torch
from conftest import REPO, tiny_config
from mmengine.runner import Runner

import pddr_mm  # noqa: F401
from pddr_mm.hooks.deploy_hook import PDDRDeployHook
from pddr_mm.rpg import RPGConv2d

ITERS = 4


def test_rpg_retinanet_trains_and_tests_deployed(tiny_shapes, tmp_path):
    config = osp.join(REPO, 'configs', 'demo', 'retinanet_r18-rpg_shapes.py')
    cfg = tiny_config(tiny_shapes, str(tmp_path), ITERS, val=False, config=config, experiment_name='rpg_train')
    cfg.custom_hooks = [dict(type='PDDRDeployHook')]
    cfg.model.test_cfg.score_thr = 0.0  # a few iterations in, keep every box so that the evaluation runs
    runner = Runner.from_cfg(cfg)
    backbone = runner.model.backbone
    ring = backbone.rpg.rings[0]
    before = ring.detach().clone()
    runner.train()
    assert not torch.equal(ring.detach(), before)  # the ring trained: the only parameters of the generated kernels
    assert sum(isinstance(m, RPGConv2d) for m in backbone.modules()) == 19
    metrics = runner.test()
    assert math.isfinite(metrics['coco/bbox_mAP'])
    (hook, ) = [h for h in runner.hooks if isinstance(h, PDDRDeployHook)]
    assert hook.last_error is not None and hook.last_error <= 1e-4  # deployed outputs match the ring model's
    assert not hasattr(backbone, 'rpg') and not any(isinstance(m, RPGConv2d) for m in backbone.modules())
