"""PDDRTemperatureHook: the schedule per iteration / epoch, back to the configured temperatures, resume."""
import glob
import inspect
import json
import sys
import os.path as osp
import uuid

import pytest
import torch
from mmengine.config import Config
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import HOOKS, METRICS
from mmengine.runner import Runner

import pddr_mm  # noqa: F401  (registers the hook)
from pddr_mm.hooks import PDDRTemperatureHook
from pddr_mm.ops import Refinement

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
PER_EPOCH = 4  # 8 samples, batch 2


class TinyPDB(BaseModel):
    """Two refinement modules with configured temperatures 1 and 2; records them at every step."""

    def __init__(self):
        super().__init__()
        self.r1 = Refinement(4, 3, reduction=2)
        self.r2 = Refinement(4, 2, reduction=2)
        self.r1.temperature, self.r2.temperature = 1.0, 2.0  # what Refinement(..., temperature=t) sets
        self.train_seen, self.val_seen = [], []

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs)
        temps = (self.r1.temperature, self.r2.temperature)
        if mode == 'loss':
            self.train_seen.append(temps)
            return dict(loss=(self.r1(x)**2).sum() + (self.r2(x)**2).sum())
        self.val_seen.append(temps)
        return [self.r1(x)]


@METRICS.register_module(force=True)
class _CountMetric(BaseMetric):
    def process(self, data_batch, data_samples):
        self.results.append(1)

    def compute_metrics(self, results):
        return dict(n=len(results))


def _runner(work_dir, hook, max_iters=None, max_epochs=None, val=False, resume=False, ckpt_interval=None):
    data = [dict(inputs=torch.randn(4, 2, 2, generator=torch.Generator().manual_seed(i))) for i in range(8)]
    loader = dict(dataset=data, sampler=dict(type='DefaultSampler', shuffle=False), batch_size=2, num_workers=0,
                  collate_fn=dict(type='pseudo_collate'))
    if max_iters:
        train_cfg = dict(by_epoch=False, max_iters=max_iters, val_interval=PER_EPOCH)
    else:
        train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
    by_epoch = max_iters is None
    return Runner(
        model=TinyPDB(), work_dir=str(work_dir), train_dataloader=loader, train_cfg=train_cfg,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        val_dataloader=loader if val else None, val_cfg=dict() if val else None,
        val_evaluator=dict(type='_CountMetric') if val else None,
        custom_hooks=[hook], resume=resume,
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=ckpt_interval or 10**6,
                                           by_epoch=by_epoch), logger=dict(type='LoggerHook', interval=1)),
        log_processor=dict(by_epoch=by_epoch, window_size=1),
        experiment_name=f'temp_{uuid.uuid4().hex[:8]}', default_scope='mmengine')


def _linear(start, end, it, total):
    return start + (end - start) * min(it / total, 1.0)


def test_registered_and_argument_checks():
    assert HOOKS.get('PDDRTemperatureHook') is PDDRTemperatureHook
    with pytest.raises(ValueError, match='exactly one of epochs or iters'):
        PDDRTemperatureHook(epochs=1, iters=10)
    with pytest.raises(ValueError, match='exactly one of epochs or iters'):
        PDDRTemperatureHook()
    with pytest.raises(ValueError, match='positive'):
        PDDRTemperatureHook(iters=0)
    with pytest.raises(ValueError, match='positive'):
        PDDRTemperatureHook(start=0, iters=3)


def test_epoch_schedule_back_to_configured_and_val_at_configured(tmp_path):
    hook = PDDRTemperatureHook(start=30.0, epochs=1.5)  # 6 iterations
    runner = _runner(tmp_path, hook, max_epochs=3, val=True)
    runner.train()
    model = runner.model
    expected = [(_linear(30, 1, i, 6), _linear(30, 2, i, 6)) for i in range(3 * PER_EPOCH)]
    assert len(model.train_seen) == len(expected)
    for got, want in zip(model.train_seen, expected):
        assert got == pytest.approx(want)
    assert model.train_seen[0] == (30.0, 30.0) and model.train_seen[6:] == [(1.0, 2.0)] * 6
    assert (model.r1.temperature, model.r2.temperature) == (1.0, 2.0)
    assert set(model.val_seen) == {(1.0, 2.0)}  # also after epoch 1, mid-annealing
    logged = runner.message_hub.get_scalar('train/pddr_temperature').data[0]
    assert list(logged) == pytest.approx([(a + b) / 2 for a, b in expected])
    (scalars, ) = glob.glob(osp.join(str(tmp_path), '*', 'vis_data', 'scalars.json'))  # the training curves
    curve = [json.loads(line)['pddr_temperature'] for line in open(scalars) if 'pddr_temperature' in line]
    assert curve == pytest.approx([(a + b) / 2 for a, b in expected])
    sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
    import plot_curves
    plot_curves.main([str(tmp_path)])  # draws the temperature next to the learning rate
    assert osp.getsize(osp.join(str(tmp_path), 'curves.png')) > 1000


def test_iter_schedule_explicit_end_and_val_annealed(tmp_path):
    hook = PDDRTemperatureHook(start=10.0, end=4.0, iters=3, val_annealed=True)
    runner = _runner(tmp_path, hook, max_iters=8, val=True)
    runner.train()
    model = runner.model
    assert [t[0] for t in model.train_seen] == pytest.approx([10, 8, 6, 4, 4, 4, 4, 4])
    assert [t[1] for t in model.train_seen] == pytest.approx([10, 8, 6, 4, 4, 4, 4, 4])
    assert set(model.val_seen) == {(4.0, 4.0)}  # the current (annealed) temperature
    assert (model.r1.temperature, model.r2.temperature) == (1.0, 2.0)  # configured again after training


def test_training_shorter_than_annealing_still_ends_at_configured(tmp_path):
    runner = _runner(tmp_path, PDDRTemperatureHook(start=30.0, iters=100), max_iters=4)
    runner.train()
    assert runner.model.train_seen[-1][0] > 25
    assert (runner.model.r1.temperature, runner.model.r2.temperature) == (1.0, 2.0)


def test_resume_continues_the_schedule(tmp_path):
    straight = _runner(tmp_path / 'straight', PDDRTemperatureHook(start=30.0, iters=6), max_iters=8)
    straight.train()
    first = _runner(tmp_path / 'resumed', PDDRTemperatureHook(start=30.0, iters=6), max_iters=4, ckpt_interval=4)
    first.train()
    resumed = _runner(tmp_path / 'resumed', PDDRTemperatureHook(start=30.0, iters=6), max_iters=8, resume=True)
    resumed.train()
    assert len(resumed.model.train_seen) == 4  # iterations 4..7 only
    assert first.model.train_seen + resumed.model.train_seen == pytest.approx(straight.model.train_seen)


def test_model_without_refinement_is_left_alone(monkeypatch):
    from types import SimpleNamespace

    import pddr_mm.hooks.temperature_hook as temperature_hook
    logged = []
    monkeypatch.setattr(temperature_hook, 'print_log', lambda msg, logger=None, level=20: logged.append((msg, level)))
    hook = PDDRTemperatureHook(iters=2)
    runner = SimpleNamespace(model=torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3)), iter=0, message_hub=None)
    hook.before_train(runner)  # warns, and every other call does nothing (message_hub is never used)
    hook.before_train_iter(runner, 0)
    hook.before_val_epoch(runner)
    hook.after_train(runner)
    assert len(logged) == 1 and logged[0][1] == 30 and 'no PD-B refinement module' in logged[0][0]


@pytest.mark.skipif('temperature' not in inspect.signature(Refinement.__init__).parameters,
                    reason='this pddr_mm.ops has no Refinement temperature yet')
def test_temperature_flattens_the_branch_weights():
    torch.manual_seed(0)
    r = Refinement(8, 4, reduction=2)
    x = torch.randn(3, 8, 5, 5)
    sharp = r(x)
    r.temperature = 30.0
    flat = r(x)
    assert (flat - 0.25).abs().max() < (sharp - 0.25).abs().max()
    assert torch.allclose(flat.sum(1), torch.ones(3))


def test_demo_anneal_and_hard_configs():
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'demo', 'pd-b-resnet18_shapes-cls_anneal.py'))
    (hook_cfg, ) = cfg.custom_hooks
    hook = HOOKS.build(hook_cfg)
    assert isinstance(hook, PDDRTemperatureHook) and hook.start == 30.0 and hook.end is None
    assert hook.epochs == 2 and cfg.train_cfg.max_epochs == 6 and cfg.model.backbone.mode == 'B'
    hard = Config.fromfile(osp.join(REPO, 'configs', 'demo', 'pd-b-resnet18_shapes-cls-hard.py'))
    assert hard.model.head.num_classes == hard.data_preprocessor.num_classes == 8
    for loader in (hard.train_dataloader, hard.val_dataloader, hard.test_dataloader):
        assert loader.dataset.data_root == 'data/shapes_hard/cls/'
    sys.path.insert(0, osp.join(REPO, 'tools', 'misc'))
    import generate_shapes_dataset as gen
    assert gen.parse_args(['--hard']).num_classes == 8
    assert gen.parse_args(['--hard', '--num-classes', '6']).num_classes == 6  # explicit options win
