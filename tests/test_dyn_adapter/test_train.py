"""Short real runs of the tiny Dyn-Adapter config on generated crops: training leaves the backbone as
loaded, saves the trained modules only, logs the loss weights and exit metrics; tools/test.py and
--resume restore from those checkpoints exactly; exit_sweep.py reads them."""
import glob
import importlib.util
import json
import math
import os.path as osp
import sys
import uuid

import pytest
import torch
from _tiny import ARCH, vit_cfg
from mmengine.config import Config
from mmengine.runner import Runner
from mmpretrain.registry import MODELS

import pddr_mm  # noqa: F401
from pddr_mm.utils import setup_runtime

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
sys.path.insert(0, osp.join(REPO, 'tools', 'misc'))
sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
sys.path.insert(0, osp.join(REPO, 'tests', 'test_pipeline'))  # pipeline_probes: InterruptAtIterHook
CONFIG = osp.join(REPO, 'configs', 'dyn_adapter', 'dyn-adapter_vit-tiny-p4_shapes-cls-hard.py')
ITERS = 8


def _tool(name: str):
    path = osp.join(REPO, 'tools', *name.split('/'))
    spec = importlib.util.spec_from_file_location(f'dyn_{uuid.uuid4().hex[:6]}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def shapes(tmp_path_factory) -> str:
    """Crops of 16 train and 8 val images of the default generated set (4 classes)."""
    import generate_shapes_dataset as gen
    out = str(tmp_path_factory.mktemp('dyn_shapes'))
    gen.main(['--out', out, '--num-train', '16', '--num-val', '8', '--img-size', '96', '--max-size', '40',
              '--max-objects', '3'])
    return osp.join(out, 'cls')


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
    """A classifier-style checkpoint of the tiny ViT, as the study's step 1 writes (keys backbone.*)."""
    torch.manual_seed(3)
    vit = MODELS.build(vit_cfg())
    vit.init_weights()
    path = str(tmp_path_factory.mktemp('dyn_vit') / 'vit.pth')
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in vit.state_dict().items()}), path)
    return path, vit.state_dict()


def _config(data_root: str, work_dir: str, pretrained: str, **model) -> Config:
    cfg = Config.fromfile(CONFIG)
    cfg.model.backbone.arch = ARCH
    cfg.model.backbone.init_cfg.checkpoint = pretrained
    cfg.model.exit_every = 2
    cfg.model.head.num_classes = 4
    cfg.model.update(model)
    cfg.data_preprocessor.num_classes = 4
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = data_root
        loader.batch_size = 8
    cfg.train_dataloader.dataset.pipeline = [t for t in cfg.train_dataloader.dataset.pipeline
                                             if t['type'] != 'RandomFlip']  # numpy's RNG is not resumed
    cfg.work_dir = work_dir
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=ITERS, val_interval=ITERS)
    cfg.param_scheduler = dict(type='ConstantLR', factor=1.0, by_epoch=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=ITERS // 2, by_epoch=False)
    cfg.log_processor = dict(window_size=1, by_epoch=False)
    cfg.launcher = 'none'
    cfg.cpu_threads = 1
    cfg.visualizer.name = f'visualizer_{uuid.uuid4().hex[:8]}'
    return setup_runtime(cfg)


@pytest.fixture(scope='module')
def trained(shapes, pretrained, tmp_path_factory):
    work = str(tmp_path_factory.mktemp('dyn_train'))
    cfg = _config(shapes, work, pretrained[0])
    cfg_path = osp.join(work, 'config.py')
    cfg.dump(cfg_path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner, work, cfg_path


def test_training_keeps_the_backbone_and_logs_weights_and_exits(trained, pretrained):
    runner, work, _ = trained
    for name, value in runner.model.backbone.state_dict().items():
        assert torch.equal(value, pretrained[1][name]), name
    (scalars, ) = glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))
    records = [json.loads(line) for line in open(scalars)]
    train = [r for r in records if 'loss' in r]
    assert len(train) == ITERS and all(math.isfinite(r['loss']) for r in train)
    num_exits = runner.model.num_exits
    assert num_exits == 2
    first = [r['exit_weight0'] for r in train]
    assert first[0] < max(first) and first[-1] < max(first)  # the first head is weighted up, then down
    assert all(r['exit_weight1'] == pytest.approx(1.) for r in train)
    val = [r for r in records if 'accuracy/top1' in r][-1]
    shares = [val[f'exit/share_exit{k}'] for k in range(num_exits)]
    assert sum(shares) == pytest.approx(1.) and 0 < val['exit/flops_ratio'] <= 1.01


def test_checkpoint_holds_the_trained_modules_and_tools_test_restores_it(trained, tmp_path):
    runner, work, cfg_path = trained
    ckpt = osp.join(work, f'iter_{ITERS}.pth')
    state = torch.load(ckpt, map_location='cpu', weights_only=False)['state_dict']
    assert set(state) == {n for n, p in runner.model.named_parameters() if p.requires_grad}
    full = sum(p.numel() for p in runner.model.parameters())
    assert sum(v.numel() for v in state.values()) < 0.5 * full

    (scalars, ) = glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))
    logged = [json.loads(line) for line in open(scalars) if 'accuracy/top1' in line][-1]
    metrics = _tool('test.py').main([cfg_path, ckpt, '--work-dir', str(tmp_path), '--cfg-options',
                                     f'visualizer.name=dyn_test_{uuid.uuid4().hex[:8]}'])
    for key in ('accuracy/top1', 'exit/share_exit0', 'exit/mflops'):
        assert metrics[key] == logged[key], key  # same weights, same images as the validation at the end


def test_resumed_run_ends_where_the_straight_run_does(shapes, pretrained, tmp_path):
    import pipeline_probes  # registers InterruptAtIterHook

    # sparsity off: its masks and dropout draw from torch's RNG, which a resumed run does not restore
    work = str(tmp_path / 'resumed')
    cfg = _config(shapes, work, pretrained[0], sparsity=None)
    cfg.custom_hooks = cfg.custom_hooks + [dict(type='InterruptAtIterHook', stop_at=ITERS // 2 + 1)]
    with pytest.raises(pipeline_probes.SimulatedInterruption):  # dies after saving iteration ITERS / 2
        Runner.from_cfg(cfg).train()
    # tools/train.py --resume CKPT: another work dir, so the two runs' logs cannot share a timestamped folder
    cfg = _config(shapes, str(tmp_path / 'second_half'), pretrained[0], sparsity=None)
    cfg.resume, cfg.load_from = True, osp.join(work, f'iter_{ITERS // 2}.pth')
    resumed = Runner.from_cfg(cfg)
    resumed.train()
    straight = Runner.from_cfg(_config(shapes, str(tmp_path / 'straight'), pretrained[0], sparsity=None))
    straight.train()

    assert resumed.iter == straight.iter == ITERS
    scalars = osp.join(resumed.log_dir, 'vis_data', 'scalars.json')
    steps = [json.loads(line)['step'] for line in open(scalars) if '"loss"' in line]
    assert steps == list(range(ITERS // 2 + 1, ITERS + 1))  # the second run trained the second half only
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=1e-4, atol=1e-5, msg=name)
    for name, value in resumed.model.backbone.state_dict().items():
        assert torch.equal(value, pretrained[1][name]), name


def test_exit_sweep_reports_every_threshold(trained, tmp_path):
    _, work, cfg_path = trained
    rows = _tool('analysis_tools/exit_sweep.py').main(
        [cfg_path, osp.join(work, f'iter_{ITERS}.pth'), '--thresholds', '0', '0.99', '0.9', '--out-dir',
         str(tmp_path)])
    last, zero, high, configured = rows
    (scalars, ) = glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))
    logged = [json.loads(line) for line in open(scalars) if 'accuracy/top1' in line][-1]
    for key in ('accuracy/top1', 'exit/share_exit0', 'exit/share_exit1', 'exit/mflops'):
        assert configured[key] == logged[key], key  # the config's threshold: what validation measured
    assert last['threshold'] is None and last['exit/share_exit1'] == 1. and last['exit/flops_ratio'] == 1.
    assert zero['exit/share_exit0'] == 1. and zero['exit/flops_ratio'] < 0.75
    assert all(r['images_per_s'] > 0 and r['num_images'] == last['num_images'] for r in rows)
    saved = json.load(open(tmp_path / 'exit_sweep.json'))
    assert [r['threshold'] for r in saved['rows']] == [None, 0., 0.99, 0.9]
    if importlib.util.find_spec('matplotlib'):
        assert osp.getsize(tmp_path / 'exit_sweep.png') > 1000


def test_exit_sweep_summarises_several_checkpoints(trained, tmp_path):
    _, work, cfg_path = trained
    ckpts = [osp.join(work, f'iter_{i}.pth') for i in (ITERS // 2, ITERS)]
    tool = _tool('analysis_tools/exit_sweep.py')
    summary = tool.main([cfg_path, *ckpts, '--thresholds', '0.9', '0', '--out-dir', str(tmp_path)])
    saved = json.load(open(tmp_path / 'exit_sweep.json'))
    assert saved['checkpoints'] == ckpts and len(saved['runs']) == 2 and saved['summary'] == summary
    for row, half, full in zip(summary, *saved['runs']):
        assert row['threshold'] == half['threshold'] == full['threshold'] and row['n'] == 2
        for key in ('top1', 'exit/mflops', 'exit/share_exit0'):
            assert row[key] == pytest.approx((half[key] + full[key]) / 2)
            assert row[f'{key}_std'] == pytest.approx(abs(half[key] - full[key]) / 2 ** 0.5)
    # the second checkpoint swept alone gives what it gave in the pair: no state carried between models
    alone = tool.main([cfg_path, ckpts[1], '--thresholds', '0.9', '0', '--out-dir', str(tmp_path / 'one')])
    for a, b in zip(alone, saved['runs'][1]):
        assert a['top1'] == b['top1'] and a['exit/mflops'] == b['exit/mflops']


def test_step_time_tool_compares_the_same_model_frozen_and_fully_trained(trained, tmp_path):
    _, _, cfg_path = trained
    out = _tool('analysis_tools/dyn_step_time.py').main(
        [cfg_path, '--batch-size', '2', '--repeat-num', '2', '--num-warmup', '0', '--threads', '1', '--json',
         str(tmp_path / 'steps.json')])
    frozen, full = out['trainable']['dyn_adapter'], out['trainable']['full_finetune']
    assert 0 < frozen < full
    assert json.load(open(tmp_path / 'steps.json'))['trainable'] == out['trainable']


def test_exit_sweep_names_a_missing_checkpoint_or_frozen_backbone_file(trained, tmp_path, capsys):
    _, work, cfg_path = trained
    tool = _tool('analysis_tools/exit_sweep.py')
    missing = str(tmp_path / 'epoch_9.pth')
    with pytest.raises(SystemExit, match=rf'^exit_sweep.py: checkpoint {missing} does not exist: pass a checkpoint '):
        tool.main([cfg_path, osp.join(work, f'iter_{ITERS}.pth'), missing, '--out-dir', str(tmp_path)])
    gone = str(tmp_path / 'vit_pretrained.pth')
    with pytest.raises(SystemExit, match=rf"^exit_sweep.py: the frozen backbone's checkpoint {gone} "
                       r'\(model.backbone.init_cfg of .*\) does not exist: .*model.backbone.init_cfg.checkpoint=PATH'):
        tool.main([cfg_path, osp.join(work, f'iter_{ITERS}.pth'), '--out-dir', str(tmp_path), '--cfg-options',
                   f'model.backbone.init_cfg.checkpoint={gone}'])
    assert not osp.exists(tmp_path / 'exit_sweep.json')
