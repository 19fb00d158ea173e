"""A short real training run of the demo PD-B RetinaNet on the tiny generated set, then its plots."""
import glob
import json
import math
import os.path as osp

import numpy as np
import plot_curves
import pytest
from conftest import tiny_config
from mmengine.runner import Runner
from PIL import Image

import pddr_mm  # noqa: F401

ITERS = 16


@pytest.fixture(scope='module')
def trained(tiny_shapes, tmp_path_factory):
    work = str(tmp_path_factory.mktemp('short_train'))
    cfg = tiny_config(tiny_shapes, work, ITERS, experiment_name='short_train')
    cfg.optim_wrapper.optimizer.lr = 4e-3
    cfg_path = osp.join(work, 'config.py')
    cfg.dump(cfg_path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.val_loop.run()  # the train loop evaluated at its end too; this returns the dict
    return work, cfg_path, metrics


def test_loss_decreases_and_coco_eval_is_finite(trained):
    work, _, metrics = trained
    (scalars, ) = glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))
    records = [json.loads(line) for line in open(scalars)]
    # the evaluation at the end of training and the one run afterwards see the same weights and data
    logged = [r for r in records if 'coco/bbox_mAP' in r][-1]
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50'):
        assert math.isfinite(metrics[key]) and metrics[key] == logged[key], (metrics, logged)
    losses = [r['loss'] for r in records if 'loss' in r]
    assert len(losses) == ITERS and all(math.isfinite(v) for v in losses)
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])
    assert last < 0.9 * first, losses
    assert osp.isfile(osp.join(work, f'iter_{ITERS}.pth'))


def test_plot_script_writes_curves_and_branch_weights(trained, capsys):
    work, cfg_path, _ = trained
    out = osp.join(work, 'plots', 'curves.png')
    import os
    os.makedirs(osp.dirname(out))
    plot_curves.main([work, '--config', cfg_path, '--checkpoint', osp.join(work, f'iter_{ITERS}.pth'), '--out', out,
                      '--num-images', '8'])
    for path in (out, osp.join(work, 'plots', 'curves_branch_weights.png')):
        img = np.asarray(Image.open(path).convert('L'))
        assert img.shape[0] > 200 and img.shape[1] > 400
        assert img.std() > 5  # something was drawn
    printed = capsys.readouterr().out
    assert 'stage 1' in printed and 'stage 4' in printed  # PD-B weights from every ResNet stage
    weights = plot_curves.collect_branch_weights(cfg_path, osp.join(work, f'iter_{ITERS}.pth'), 4)
    for names, w in weights.values():
        assert w.shape[1] == len(names) == 4
        np.testing.assert_allclose(w.sum(1), 1, rtol=1e-5)  # softmax over the branches


def test_flip_tta_with_deploy_on_the_trained_detector(trained, tmp_path, monkeypatch):
    """tools/test.py --tta --deploy: the detector under mmdet's DetTTAModel (flip TTA, the config has none of
    its own) is fused and checked against its unfused form on the first augmentation's batch."""
    import importlib.util
    import uuid

    from conftest import REPO
    spec = importlib.util.spec_from_file_location('pddr_test_tool', osp.join(REPO, 'tools', 'test.py'))
    test_tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_tool)
    from pddr_mm.hooks.deploy_hook import PDDRDeployHook
    checked = []
    check = PDDRDeployHook._check
    monkeypatch.setattr(PDDRDeployHook, '_check', lambda self, *a: checked.append(check(self, *a) or self.last_error))
    work, cfg_path, _ = trained
    metrics = test_tool.main([cfg_path, osp.join(work, f'iter_{ITERS}.pth'), '--tta', '--deploy', '--work-dir',
                              str(tmp_path), '--cfg-options', f'visualizer.name=tta_{uuid.uuid4().hex[:8]}'])
    assert math.isfinite(metrics['coco/bbox_mAP'])
    assert len(checked) == 1 and checked[0] <= 1e-4  # fused, and checked once, inside the TTA wrapper
