"""Two training processes on CPU (tools/dist_train.sh, torchrun + gloo) train one model and evaluate together."""
import glob
import json
import math
import os
import os.path as osp
import pickle
import socket
import subprocess
import sys

import pytest
import torch
from conftest import REPO, tiny_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.parametrize('config', [None, 'retinanet_r18-rpg_shapes.py'], ids=['pd-b', 'rpg'])
def test_two_processes_train_the_same_model_and_gather_eval(tiny_shapes, tmp_path, config):
    """The demo PD-B RetinaNet, and its RPG variant (one ring shared by every generated conv: DDP reduces its
    gradient once, and both ranks rebuild the same indices from the seed)."""
    work = str(tmp_path / 'work')
    dump = str(tmp_path / 'val_results.pkl')
    extra = dict(config=osp.join(REPO, 'configs', 'demo', config)) if config else {}
    cfg = tiny_config(tiny_shapes, work, max_iters=4, **extra)
    cfg.train_dataloader.batch_size = 2  # 2 per process: the same global batch as the other tests
    cfg.custom_imports = dict(imports=['pddr_mm', 'pipeline_probes'], allow_failed_imports=False)
    cfg.custom_hooks = [dict(type='DumpRankParamsHook')]
    cfg.val_evaluator = [cfg.val_evaluator, dict(type='DumpResults', out_file_path=dump)]
    cfg.cpu_threads = 1
    cfg.model.test_cfg.score_thr = 0.0  # after 4 iterations every score is near the focal-loss prior (0.01)
    cfg_path = str(tmp_path / 'dist_cfg.py')
    cfg.dump(cfg_path)

    env = dict(os.environ, PORT=str(_free_port()), PYTHON=sys.executable,
               PYTHONPATH=os.pathsep.join([osp.dirname(__file__), os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run(['bash', osp.join(REPO, 'tools', 'dist_train.sh'), cfg_path, '2', '--work-dir', work],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    before = [torch.load(osp.join(work, f'params_before_rank{r}.pth')) for r in (0, 1)]
    after = [torch.load(osp.join(work, f'params_after_rank{r}.pth')) for r in (0, 1)]
    assert after[0].keys() == after[1].keys() and len(after[0]) > 0
    for k in after[0]:
        assert torch.equal(after[0][k], after[1][k]), f'ranks disagree on {k}'
    assert any(not torch.equal(before[0][k], after[0][k]) for k in after[0]), 'nothing was trained'

    # evaluation: each rank ran half of the 8 val images; rank 0 evaluated all of them
    with open(dump, 'rb') as f:
        results = pickle.load(f)
    assert sorted(r['img_id'] for r in results) == list(range(8))
    (scalars, ) = glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))
    val = [json.loads(line) for line in open(scalars) if 'coco/bbox_mAP' in line]
    assert len(val) == 1 and math.isfinite(val[0]['coco/bbox_mAP'])
    (log, ) = glob.glob(osp.join(work, '*', '*.log'))
    text = open(log).read()
    assert 'Distributed training: True' in text and 'The testing results of the whole dataset is empty' not in text


@pytest.mark.parametrize('launcher,missing', [('pytorch', 'RANK'), ('slurm', 'SLURM_PROCID')])
def test_launcher_without_its_environment_is_a_clear_error(launcher, missing, monkeypatch):
    from pddr_mm.utils.runtime import init_cpu_dist
    for key in ('RANK', 'WORLD_SIZE', 'SLURM_PROCID', 'SLURM_NTASKS'):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match=f"--launcher {launcher} needs .*'{missing}'.*leave out --launcher"):
        init_cpu_dist(launcher)
