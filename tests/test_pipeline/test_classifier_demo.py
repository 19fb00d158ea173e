"""The demo PD-B classifier (mmpretrain) trains on the generated crops, and its fused form tests the same."""
import glob
import json
import math
import os.path as osp

import pytest
from conftest import REPO, unique_visualizer
from mmengine.config import Config
from mmengine.runner import Runner

import pddr_mm  # noqa: F401
from pddr_mm.utils import setup_runtime

CLS_CONFIGS = [osp.join(REPO, 'configs', 'demo', name)
               for name in ('pd-b-resnet18_shapes-cls.py', 'pd-b-mobilevit-xxs_shapes-cls.py')]
ITERS = 12


def _config(config: str, data_root: str, work_dir: str) -> Config:
    cfg = Config.fromfile(config)
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = osp.join(data_root, 'cls')
        loader.batch_size = 8
    cfg.work_dir = work_dir
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=ITERS, val_interval=ITERS)
    cfg.param_scheduler = dict(type='ConstantLR', factor=1.0, by_epoch=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=ITERS, by_epoch=False)
    cfg.log_processor = dict(window_size=1, by_epoch=False)
    cfg.launcher = 'none'
    unique_visualizer(cfg)
    return setup_runtime(cfg)


@pytest.mark.parametrize('config', CLS_CONFIGS, ids=osp.basename)
def test_classifier_demo_trains_and_fused_test_matches(config, tiny_shapes, tmp_path):
    work = str(tmp_path / 'train')
    cfg = _config(config, tiny_shapes, work)
    runner = Runner.from_cfg(cfg)
    runner.train()
    unfused = runner.test()
    (scalars, ) = glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))
    records = [json.loads(line) for line in open(scalars)]
    losses = [r['loss'] for r in records if 'loss' in r]
    assert len(losses) == ITERS and all(math.isfinite(v) for v in losses)
    # the validation at the end of training saw the same weights and images as this test (val = test set)
    logged = [r for r in records if 'accuracy/top1' in r][-1]
    assert unfused['accuracy/top1'] == logged['accuracy/top1']

    test_cfg = _config(config, tiny_shapes, str(tmp_path / 'fused'))
    test_cfg.load_from = osp.join(work, f'iter_{ITERS}.pth')
    test_cfg.custom_hooks = [dict(type='PDDRDeployHook')]
    tester = Runner.from_cfg(test_cfg)
    fused = tester.test()
    assert pddr_mm.is_deployed(tester.model)
    assert fused['accuracy/top1'] == unfused['accuracy/top1']


def test_mmengine_compile_option_trains_the_pd_b_classifier(tiny_shapes, tmp_path):
    """`compile = dict(...)` in a config (mmengine compiles the model's train_step and test_step): a PD-B
    classifier trains through it, its temperature annealed every iteration, and gives finite losses. Dynamo's
    'eager' backend: the same graph capture as inductor without building kernels (fast on CI)."""
    import torch
    torch._dynamo.reset()
    cfg = _config(CLS_CONFIGS[0], tiny_shapes, str(tmp_path / 'compiled'))
    cfg.compile = dict(backend='eager')
    cfg.custom_hooks = [dict(type='PDDRTemperatureHook', start=10.0, iters=ITERS // 2)]
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert type(runner.model.train_step).__name__ != 'method'  # mmengine replaced it with the compiled one
    (scalars, ) = glob.glob(osp.join(str(tmp_path / 'compiled'), '*', 'vis_data', 'scalars.json'))
    losses = [json.loads(line)['loss'] for line in open(scalars) if '"loss"' in line]
    assert len(losses) == ITERS and all(math.isfinite(v) for v in losses)
