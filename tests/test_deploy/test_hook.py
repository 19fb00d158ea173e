"""PDDRDeployHook in real (tiny) Runner runs: training untouched, fused validation, fused test, check fires."""
import glob
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
from deploy_fixtures import CLS_CONFIG, write_config
from mmengine.config import Config
from mmengine.runner import Runner

import pddr_mm.hooks.deploy_hook as deploy_hook
from pddr_mm.deployment import unwrap
from pddr_mm.hooks import PDDRDeployHook
from pddr_mm.ops import PDConv2d, is_deployed
from random_bn import randomize_bn
from pddr_mm.utils import setup_runtime


def make_runner(tmp_path, name, **overrides) -> Runner:
    cfg = Config.fromfile(write_config(str(tmp_path / f'{name}.py'), CLS_CONFIG))
    cfg.work_dir = str(tmp_path / name)
    cfg.merge_from_dict(overrides)
    setup_runtime(cfg)
    return Runner.from_cfg(cfg)


def deploy_hook_of(runner) -> PDDRDeployHook:
    return next(h for h in runner.hooks if isinstance(h, PDDRDeployHook))


def test_training_untouched_and_fused_validation(tmp_path, monkeypatch):
    runner = make_runner(tmp_path, 'train')
    validated = []
    real_val_step = type(unwrap(runner.model)).val_step

    def spy_val_step(model, data):  # records which model the val loop ran, and its layers' paths
        validated.append((id(model), {m.forward_path for m in model.modules() if isinstance(m, PDConv2d)}))
        return real_val_step(model, data)

    monkeypatch.setattr(type(unwrap(runner.model)), 'val_step', spy_val_step)
    runner.train()
    model = unwrap(runner.model)
    # validation ran the training model itself (no copy) through the fused kernels, then back to 'auto'
    assert validated and all(i == id(model) and paths == {'fused'} for i, paths in validated)
    assert {m.forward_path for m in model.modules() if isinstance(m, PDConv2d)} == {'auto'}
    # the training model still has its branches, and still trains
    layers = [m for m in model.modules() if isinstance(m, PDConv2d)]
    assert layers and not any(m.deploy for m in layers) and all(hasattr(m, 'branches') for m in layers)
    model.train()
    before = layers[0].branches[0].conv_bn.conv.weight.detach().clone()
    data = model.data_preprocessor(next(iter(runner.train_dataloader)), True)
    loss = sum(v for k, v in model(**data, mode='loss').items() if 'loss' in k)
    loss.backward()
    assert layers[0].branches[0].conv_bn.conv.weight.grad.abs().sum() > 0
    runner.optim_wrapper.step()
    assert not torch.equal(before, layers[0].branches[0].conv_bn.conv.weight)
    assert osp.isfile(osp.join(runner.work_dir, 'epoch_1.pth'))


def test_fuses_before_testing_and_checks(tmp_path):
    runner = make_runner(tmp_path, 'test', log_level='INFO')
    randomize_bn(runner.model, seed=1)
    hook = deploy_hook_of(runner)
    metrics = runner.test()
    assert is_deployed(unwrap(runner.model))
    assert hook.last_error is not None and hook.last_error <= 1e-5
    assert 'accuracy/top1' in metrics
    log = open(glob.glob(osp.join(runner.log_dir, '*.log'))[0]).read()
    assert 'PDDRDeployHook: fused 2 PDConv2d layers for testing' in log
    line = next(x for x in log.splitlines() if 'FLOPs' in x)
    # params and FLOPs are logged before -> after fusion, on the first batch's shape, both counted
    assert 'input (4, 3, 32, 32): params' in line and 'n/a' not in line
    assert 'fused outputs match the unfused ones' in log


def test_test_with_ema_hook(tmp_path):
    # EMAHook swaps parameters back after testing, which would fail on the fused model
    runner = make_runner(tmp_path, 'ema', custom_hooks=[dict(type='EMAHook'), dict(type='PDDRDeployHook')])
    randomize_bn(runner.model, seed=1)
    metrics = runner.test()
    assert 'accuracy/top1' in metrics and is_deployed(unwrap(runner.model))
    assert deploy_hook_of(runner).last_error <= 1e-5


def test_hook_with_wrapped_model(tmp_path):
    """DDP-wrapped model (single-process gloo group): fused validation copy and test fusion reach the module."""
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel

    from pddr_mm.deployment.checkpoint import build_model
    from pddr_mm.deployment.inputs import make_batch
    created = not dist.is_initialized()
    if created:
        dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg', rank=0, world_size=1)
    try:
        model = randomize_bn(build_model(Config.fromfile(write_config(str(tmp_path / 'w.py'), CLS_CONFIG))), 7)
        wrapped = MMDistributedDataParallel(module=model)
        runner = SimpleNamespace(model=wrapped)
        hook = PDDRDeployHook(fuse_val=True)
        paths = lambda: {m.forward_path for m in model.modules() if isinstance(m, PDConv2d)}  # noqa: E731
        hook.before_val_epoch(runner)
        assert runner.model is wrapped and paths() == {'fused'} and not is_deployed(model)
        hook.after_val_epoch(runner)
        assert runner.model is wrapped and paths() == {'auto'}
        hook.before_test_epoch(runner)
        hook.before_test_iter(runner, 0, make_batch(model, 2, (32, 32)))
        assert runner.model is wrapped and is_deployed(model) and hook.last_error <= 1e-5
    finally:
        if created:
            dist.destroy_process_group()


def corrupting_fusion(real):
    """switch_to_deploy that then perturbs the fused kernels of the last PDConv2d (a broken fusion)."""

    def fuse_and_corrupt(model):
        num = real(model)
        layer = [m for m in model.modules() if isinstance(m, PDConv2d)][-1]
        with torch.no_grad():
            layer.fused.weight.add_(torch.randn_like(layer.fused.weight))
        return num

    return fuse_and_corrupt


def test_no_copy_of_the_model(tmp_path, monkeypatch):
    """Testing fuses in place and checks against the same model's branch-by-branch outputs: on a GPU a copy
    would double the model's memory."""
    import copy
    runner = make_runner(tmp_path, 'nocopy')
    randomize_bn(runner.model, seed=1)
    copied = []
    real_deepcopy = copy.deepcopy
    monkeypatch.setattr(copy, 'deepcopy', lambda x, *a: copied.append(type(x).__name__) or real_deepcopy(x, *a))
    runner.test()
    assert is_deployed(unwrap(runner.model)) and deploy_hook_of(runner).last_error <= 1e-5
    assert not [name for name in copied if name == type(unwrap(runner.model)).__name__]


def test_mismatch_check_fires(tmp_path, monkeypatch):
    runner = make_runner(tmp_path, 'corrupt')
    randomize_bn(runner.model, seed=2)
    monkeypatch.setattr(deploy_hook, 'switch_to_deploy', corrupting_fusion(deploy_hook.switch_to_deploy))
    with pytest.raises(RuntimeError, match='disagrees with the unfused'):
        runner.test()


def test_tolerance_is_configurable(tmp_path, monkeypatch):
    # the same corruption passes when the user allows a huge error: the check compares against tolerance
    runner = make_runner(tmp_path, 'loose', custom_hooks=[dict(type='PDDRDeployHook', tolerance=1e9)])
    randomize_bn(runner.model, seed=2)
    monkeypatch.setattr(deploy_hook, 'switch_to_deploy', corrupting_fusion(deploy_hook.switch_to_deploy))
    runner.test()
    assert deploy_hook_of(runner).last_error > 1e-2
