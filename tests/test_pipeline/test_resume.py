"""An interrupted run resumed with --resume ends where an uninterrupted one does."""
import glob
import json
import os.path as osp

import pytest
import torch
from conftest import tiny_config
from mmengine.runner import Runner
from pipeline_probes import SimulatedInterruption

import pddr_mm  # noqa: F401

N = 8


def _run(data_root, work_dir, name, resume=False, stop_at=None):
    cfg = tiny_config(data_root, work_dir, N, val=False, flip=False, experiment_name=name)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=N // 2, by_epoch=False)
    cfg.resume = resume  # what tools/train.py --resume (auto) sets
    if stop_at:
        cfg.custom_hooks = [dict(type='InterruptAtIterHook', stop_at=stop_at)]
    runner = Runner.from_cfg(cfg)
    if stop_at:
        with pytest.raises(SimulatedInterruption):
            runner.train()
    else:
        runner.train()
    return runner


def test_interrupted_and_resumed_run_matches_straight_run(tiny_shapes, tmp_path):
    straight = _run(tiny_shapes, str(tmp_path / 'straight'), 'straight')
    _run(tiny_shapes, str(tmp_path / 'resumed'), 'first_half', stop_at=N // 2 + 1)  # dies after saving iter 4
    assert osp.isfile(tmp_path / 'resumed' / f'iter_{N // 2}.pth')
    assert not osp.isfile(tmp_path / 'resumed' / f'iter_{N}.pth')
    resumed = _run(tiny_shapes, str(tmp_path / 'resumed'), 'second_half', resume=True)

    assert resumed.iter == straight.iter == N
    # the second run trained only iterations N/2+1..N (a run that ignored --resume would redo all N)
    logs = sorted(glob.glob(str(tmp_path / 'resumed' / '*' / 'vis_data' / 'scalars.json')))
    assert len(logs) == 2
    steps = [json.loads(line)['step'] for line in open(logs[-1]) if '"loss"' in line]
    assert steps == list(range(N // 2 + 1, N + 1))
    a = torch.load(tmp_path / 'straight' / f'iter_{N}.pth', map_location='cpu', weights_only=False)
    b = torch.load(tmp_path / 'resumed' / f'iter_{N}.pth', map_location='cpu', weights_only=False)
    assert a['meta']['iter'] == b['meta']['iter'] == N
    assert a['param_schedulers'] == b['param_schedulers']  # last_epoch, base/last lrs of every scheduler
    assert a['optimizer']['param_groups'] == b['optimizer']['param_groups']
    opt_a, opt_b = a['optimizer']['state'], b['optimizer']['state']
    assert opt_a.keys() == opt_b.keys() and len(opt_a) > 0
    for k in opt_a:
        assert opt_a[k]['step'] == opt_b[k]['step']
        for s in ('exp_avg', 'exp_avg_sq'):
            torch.testing.assert_close(opt_a[k][s], opt_b[k][s], rtol=1e-4, atol=1e-6)
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for k in a['state_dict']:
        torch.testing.assert_close(a['state_dict'][k], b['state_dict'][k], rtol=1e-4, atol=1e-5, msg=k)
