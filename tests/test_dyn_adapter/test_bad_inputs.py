"""Bad Dyn-Adapter arguments fail at build time with a ValueError that names the argument."""
import importlib.util
import os.path as osp
import re

import pytest
import torch
from _tiny import NUM_CLASSES, build, images, vit_cfg
from mmpretrain.registry import MODELS

from pddr_mm.dyn_adapter import ExitLossWeightHook, ExitMetric


@pytest.mark.parametrize('kwargs, match', [
    (dict(exit_indices=(1, 4)), r'exit_indices \[4\] outside the backbone depth: blocks are 0..3'),
    (dict(exit_indices=(-1, 3)), r'exit_indices \[-1\] outside'),
    (dict(exit_indices=(2, 1, 3)), 'strictly increasing'),
    (dict(exit_indices=(1, 2)), 'must end with the last block'),
    (dict(exit_indices=()), 'exit_indices is empty'),
    (dict(exit_indices=None), 'exactly one of exit_indices'),
    (dict(exit_indices=(3, ), exit_every=2), 'exactly one of exit_indices'),
    (dict(exit_indices=None, exit_every=0), r'exit_every must be an int in \[1, 4\]'),
    (dict(exit_indices=None, exit_every=5), r'exit_every must be an int in \[1, 4\]'),
    (dict(exit_threshold=-0.1), r'exit_threshold must be None or a probability in \[0, 1\]'),
    (dict(exit_threshold=1.5), 'exit_threshold'),
    (dict(exit_threshold='0.9'), 'exit_threshold'),
    (dict(backbone=dict(type='ResNet', depth=18)), 'needs an mmpretrain VisionTransformer backbone.*got ResNet'),
    (dict(backbone=vit_cfg(out_type='featmap')), 'backbone out_type must be one of'),
    (dict(sparsity=dict(drop_shallow=1.0)), r'sparsity drop_shallow must be in \[0, 1\)'),
    (dict(sparsity=dict(grad_masking=0.1)), 'sparsity: .*grad_masking'),
    (dict(head=dict(num_classes=NUM_CLASSES, depth=2)), r"head got unknown keys \['depth'\]"),
    (dict(head=dict()), 'head needs num_classes'),
    (dict(adapter=dict(type='Adapter', hidden_dim=0)), 'Adapter hidden_dim must be >= 1'),
    (dict(adapter=dict(type='LoRA', rank=0)), 'LoRA rank must be >= 1'),
    (dict(adapter=dict(type='LoRA', targets=('fc', ))), r'LoRA needs each backbone layer to have `attn.fc`'),
    (dict(loss_weights=(1., )), 'loss_weights has 1 values for 2 exits'),
    (dict(save_frozen='yes'), 'save_frozen must be'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(randomize=False, **kwargs)


def test_threshold_set_later_is_checked_too():
    model = build(randomize=False)
    model.exit_threshold = 0.  # the bounds themselves are allowed
    model.exit_threshold = 1
    with pytest.raises(ValueError, match='exit_threshold'):
        model.exit_threshold = 1.01


@torch.no_grad()
def test_distilled_vit_subclass_runs_like_its_own_forward():
    model = MODELS.build(dict(type='DynAdapterClassifier', backbone=dict(vit_cfg(), type='DistilledVisionTransformer'),
                              head=dict(num_classes=NUM_CLASSES), exit_every=2)).eval()
    x = images(3)
    cls_token, _ = model.backbone(x)[0]  # (cls, dist) tokens; the heads read the class token
    scores, exits = model.dynamic_forward(x, None)
    torch.testing.assert_close(scores, model.heads[-1](cls_token).softmax(-1), rtol=0, atol=1e-6)


@pytest.mark.parametrize('kwargs, match', [
    (dict(warmup_ratio=1.0), r'warmup_ratio must be in \[0, 1\)'),
    (dict(min_end_weight=-1), 'min_end_weight must be >= 0'),
])
def test_bad_hook_and_metric_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ExitLossWeightHook(**kwargs)
    with pytest.raises(ValueError, match='num_exits must be >= 1'):
        ExitMetric(num_exits=0)


def _exit_sweep():
    path = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'analysis_tools', 'exit_sweep.py')
    spec = importlib.util.spec_from_file_location('exit_sweep_args', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('thresholds, message', [
    (['1.5'], r'--thresholds: expected a number in \[0, 1\], got 1.5'),
    (['-0.1'], r'--thresholds: expected a number in \[0, 1\]'),
    (['0.5', '0.5'], r'--thresholds: repeated values'),
])
def test_exit_sweep_refuses_bad_thresholds(thresholds, message, capsys):
    with pytest.raises(SystemExit) as err:
        _exit_sweep().parse_args(['cfg.py', 'ckpt.pth', '--thresholds', *thresholds])
    assert err.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_exit_sweep_refuses_a_model_without_exits(tmp_path):
    cfg = tmp_path / 'plain.py'
    cfg.write_text("default_scope = 'mmpretrain'\nmodel = dict(type='ImageClassifier', backbone=dict("
                   "type='VisionTransformer', arch=dict(embed_dims=32, num_layers=1, num_heads=2, "
                   "feedforward_channels=64), img_size=32, patch_size=4))\n")
    unused = tmp_path / 'unused.pth'  # there (a missing one is refused first), never read
    unused.write_bytes(b'')
    with pytest.raises(ValueError, match='exit_sweep needs a DynAdapterClassifier'):
        _exit_sweep().main([str(cfg), str(unused)])
