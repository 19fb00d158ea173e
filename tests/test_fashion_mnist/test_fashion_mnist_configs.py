"""configs/fashion_mnist: every config trains an iteration on a tiny unpacked set and evaluates on its test
images (test_mode=True, not the training set), with the backbone its name says."""
import glob
import os.path as osp
import uuid

import pytest
from fmnist_fixtures import REPO, SIZES
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

import pddr_mm
from pddr_mm.ops import PDConv2d
from pddr_mm.rpg import RPGConv2d
from pddr_mm.utils import setup_runtime

CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'fashion_mnist', '*.py')))
EXPECTED = {  # config -> (the PDDR mode of every PD layer, or 'rpg', or None for plain)
    'resnet18-w16_fashion-mnist.py': None,
    'pd-a-resnet18-w16_fashion-mnist.py': 'A',
    'pd-b-resnet18-w16_fashion-mnist.py': 'B',
    'pd-b-resnet18-w16_fashion-mnist_anneal.py': 'B',
    'rpg-resnet18-w16_ring-1-4_fashion-mnist.py': 'rpg',
}


def _tiny_runner(cfg: Config, work_dir, iters: int) -> Runner:
    """``cfg`` as an ``iters``-iteration run, validated and checkpointed at its end, in ``work_dir``."""
    cfg.work_dir = str(work_dir)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters)
    cfg.param_scheduler = dict(type='ConstantLR', factor=1.0, by_epoch=False)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=iters, by_epoch=False)
    cfg.visualizer.name = f'visualizer_{uuid.uuid4().hex[:8]}'
    cfg.launcher = 'none'
    return Runner.from_cfg(setup_runtime(cfg))


def test_every_config_is_listed():
    assert sorted(map(osp.basename, CONFIGS)) == sorted(EXPECTED)


def test_val_and_test_read_the_test_images_and_train_the_training_images():
    for path in CONFIGS:
        cfg = Config.fromfile(path)
        assert cfg.train_dataloader.dataset.test_mode is False, path
        for loader in (cfg.val_dataloader, cfg.test_dataloader):
            assert loader.dataset.type == 'FashionMNIST' and loader.dataset.test_mode is True, path
        assert cfg.data_preprocessor.num_classes == 10 and len(cfg.data_preprocessor.mean) == 1


@pytest.mark.parametrize('config', CONFIGS, ids=osp.basename)
def test_config_trains_an_iteration_and_evaluates_on_the_test_images(config, fixture_data_root, tmp_path):
    cfg = Config.fromfile(config)
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_prefix = fixture_data_root
        loader.batch_size = 8
    runner = _tiny_runner(cfg, tmp_path, iters=2)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        runner.train()
    assert len(runner.train_dataloader.dataset) == SIZES['train']
    assert len(runner.val_dataloader.dataset) == SIZES['t10k']
    assert 0 <= runner.message_hub.get_scalar('val/accuracy/top1').current() <= 100
    model = runner.model
    assert model.backbone.conv1.in_channels == 1
    pd = [m for m in model.modules() if isinstance(m, PDConv2d)]
    rpg = [m for m in model.modules() if isinstance(m, RPGConv2d)]
    kind = EXPECTED[osp.basename(config)]
    if kind is None:
        assert not pd and not rpg
    elif kind == 'rpg':
        assert len(rpg) == 19 and not pd  # every conv but the stem
    else:
        assert len(pd) == 16 and {m.mode for m in pd} == {kind} and not rpg  # the blocks' 3x3 convs
    pddr_mm.switch_to_deploy(model)
    assert not any(isinstance(m, RPGConv2d) for m in model.modules())
    assert all(m.deploy for m in model.modules() if isinstance(m, PDConv2d))


DYN_CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'dyn_adapter', '*fashion-mnist*.py')))


def _point_at(node, root, draw):
    """Every FashionMNIST dict under ``node`` reads ``root``; every drawn ClassSubset draws ``draw`` images."""
    if isinstance(node, dict):
        if node.get('type') == 'FashionMNIST':
            node['data_prefix'] = root
        if node.get('type') == 'ClassSubset' and node.get('num_samples'):
            node['num_samples'] = draw
            node['part'] = (0, draw - 4) if node['part'][0] == 0 else (draw - 4, draw)
        for v in node.values():
            _point_at(v, root, draw)


def test_the_dyn_adapter_study_configs_are_all_here():
    names = sorted(osp.basename(c).split('_')[0] for c in DYN_CONFIGS)
    assert names == ['adapter', 'dyn-adapter', 'full-ft', 'linear-probe', 'lora', 'vit-tiny-p4']


@pytest.mark.parametrize('config', DYN_CONFIGS, ids=osp.basename)
def test_dyn_adapter_config_splits_the_classes_and_trains_an_iteration(config, fixture_data_root, tmp_path):
    cfg = Config.fromfile(config)
    pretraining = osp.basename(config).startswith('vit')
    cfg.model.backbone.pop('init_cfg', None)  # no pretrained checkpoint in the tests
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        _point_at(loader, fixture_data_root, draw=16)
        loader.batch_size = 4
    runner = _tiny_runner(cfg, tmp_path, iters=1)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        runner.train()
        test = runner.test()
    train, val, tst = (runner.train_dataloader.dataset, runner.val_dataloader.dataset,
                       runner.test_dataloader.dataset)
    wanted = [0, 1, 2, 3, 4] if pretraining else [5, 6, 7, 8, 9]
    assert list(train.label_map) == list(tst.label_map) == wanted
    assert train.dataset.test_mode is False and tst.dataset.test_mode is True
    assert len(tst) == SIZES['t10k'] // 2  # the test images of the five classes
    if pretraining:  # every training image of its classes; monitored on their test images
        assert len(train) == SIZES['train'] // 2 and val.dataset.test_mode is True
    else:  # VTAB-1k: one draw from the training images, cut into disjoint train and val parts
        assert (len(train), len(val)) == (12, 4) and not set(train.indices) & set(val.indices)
        assert val.dataset.test_mode is False
    assert 0 <= test['accuracy/top1'] <= 100
