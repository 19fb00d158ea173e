"""Shared fixtures of the pipeline tests: a tiny generated shapes set and a small detection config."""
import os
import os.path as osp
import sys
import uuid

import pytest

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
sys.path.insert(0, osp.dirname(__file__))  # helper modules of these tests (e.g. the dist hook)
sys.path.insert(0, osp.join(REPO, 'tools', 'misc'))
sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))

DEMO_CONFIG = osp.join(REPO, 'configs', 'demo', 'retinanet_r18-pdb_shapes.py')


@pytest.fixture(scope='session')
def tiny_shapes(tmp_path_factory) -> str:
    """16 train and 8 val images of 96x96 px (a few seconds to write)."""
    import generate_shapes_dataset as gen
    out = str(tmp_path_factory.mktemp('shapes'))
    gen.main(['--out', out, '--num-train', '16', '--num-val', '8', '--img-size', '96', '--max-size', '40',
              '--max-objects', '3'])
    return out


def unique_visualizer(cfg) -> None:
    """mmengine keeps one visualizer per name for the process, and mmdet's runtime names it 'visualizer':
    a second Runner in the same process would write its scalars into the first run's (deleted) log dir."""
    cfg.visualizer.name = f'visualizer_{uuid.uuid4().hex[:8]}'


def tiny_config(data_root: str, work_dir: str, max_iters: int, val: bool = True, flip: bool = True,
                config: str = DEMO_CONFIG, **extra):
    """The demo PD-B RetinaNet (or another demo ``config``) on the tiny set: iteration-based, batch 4, evaluated
    at the end."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    root = data_root.rstrip('/') + '/'
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = root
        loader.batch_size = 4
    if not flip:  # random flips draw from numpy's global RNG, whose state a resumed run cannot restore
        cfg.train_dataloader.dataset.pipeline = [t for t in cfg.train_dataloader.dataset.pipeline
                                                 if t['type'] != 'RandomFlip']
    for ev in (cfg.val_evaluator, cfg.test_evaluator):
        ev.ann_file = root + 'annotations/instances_val.json'
    cfg.work_dir = work_dir
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters if val else 10**9)
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
        dict(type='CosineAnnealingLR', T_max=max_iters, by_epoch=False, begin=0, end=max_iters),
    ]
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=max_iters, by_epoch=False)
    cfg.log_processor = dict(window_size=1, by_epoch=False)
    cfg.launcher = 'none'
    unique_visualizer(cfg)
    cfg.merge_from_dict(extra)
    from pddr_mm.utils import setup_runtime
    return setup_runtime(cfg)  # as tools/train.py does: gloo, and cpu_threads of the config
