"""tools/analysis_tools/benchmark.py and get_flops.py on tiny generated models (small inputs, 2 repeats)."""
import json

import pytest

import torch
from deploy_fixtures import CLS_CONFIG, DET_CONFIG, load_tool, write_config
from mmengine.config import Config

from pddr_mm.deployment.benchmark import INFER_HEADER, TRAIN_HEADER
from pddr_mm.deployment.checkpoint import build_model
from random_bn import randomize_bn

benchmark = load_tool('analysis_tools/benchmark')
get_flops = load_tool('analysis_tools/get_flops')


def header_line(header):
    return [h.strip() for h in header]


def table_rows(out: str, first_col: str):
    return [[c.strip() for c in line.split('|')] for line in out.splitlines() if line.startswith(first_col)]


def test_benchmark_compares_deployed_forms_with_bns_folded(tmp_path):
    """The benchmark's fused model and baseline have their conv + BN pairs folded (fuse_pd_conv_bn for the
    ConvModule norm after each PDConv2d, mmcv's fuse_conv_bn for the rest): neither keeps a BN, and fused
    PD-A is the plain network, parameter for parameter."""
    from torch.nn.modules.batchnorm import _BatchNorm

    from pddr_mm.deployment.benchmark import build_variants
    cfg = Config.fromfile(write_config(str(tmp_path / 'tiny_cls_a.py'), CLS_CONFIG.replace("mode='B'", "mode='A'")))
    models, num = build_variants(cfg, None, torch.device('cpu'))
    bns = {name: [m for m in models[name].modules() if isinstance(m, _BatchNorm)] for name in models}
    assert num == 2 and len(bns['baseline']) == 0 and len(bns['fused']) == 0
    assert len(bns['unfused']) == 1 + num * (1 + 5)  # stem; per PD layer its ConvModule norm + 5 branch BNs
    fused_shapes = [p.shape for p in models['fused'].parameters()]
    assert fused_shapes == [p.shape for p in models['baseline'].parameters()]


def test_benchmark_classifier_prints_every_column(tmp_path, capsys):
    cfg_path = write_config(str(tmp_path / 'tiny_cls.py'), CLS_CONFIG)
    ckpt = str(tmp_path / 'ckpt.pth')
    model = randomize_bn(build_model(Config.fromfile(cfg_path)), 5)
    torch.save(dict(meta={}, state_dict=model.state_dict()), ckpt)
    out_json = str(tmp_path / 'bench.json')
    result = benchmark.main([cfg_path, '--checkpoint', ckpt, '--shape', '32', '32', '--repeat-num', '2',
                             '--num-warmup', '1', '--batch-size', '2', '--train', '--json', out_json])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any([c.strip() for c in line.split('|')] == list(INFER_HEADER) for line in lines)
    assert any([c.strip() for c in line.split('|')] == list(TRAIN_HEADER) for line in lines)
    rows = {r[0]: r for r in (table_rows(out, 'unfused') + table_rows(out, 'fused') + table_rows(out, 'baseline'))}
    assert set(rows) == {'unfused', 'fused', 'baseline'}
    for row in rows.values():
        assert len(row) == len(INFER_HEADER) and float(row[1]) > 0 and float(row[3]) > 0 and 'n/a' not in row
    assert 'latency ratio fused/baseline:' in out and 'unfused/fused:' in out
    # a PD-B model: the mixing of its per-sample kernels is timed on its own, in the same round robin
    assert 'PD-B kernel mixing alone (2 layer calls' in out
    assert result['inference']['mixing']['median_ms'] > 0 and result['ratios']['mixing/baseline'] > 0
    train_rows = table_rows(out, 'bn_train ') + table_rows(out, 'bn_frozen ')
    assert sorted((r[0], r[1]) for r in train_rows) == [('bn_frozen', 'baseline'), ('bn_frozen', 'pd (unfused)'),
                                                        ('bn_train', 'baseline'), ('bn_train', 'pd (unfused)')]
    assert all(len(r) == len(TRAIN_HEADER) and float(r[2]) > 0 for r in train_rows)
    assert 'memory: autograd saved tensors per step (CPU)' in out or 'CUDA peak' in out

    inf = result['inference']
    # measured structure: fusion removes the branch FLOPs; the plain model has no refinement. (A deployed
    # PD-B model stores its folded branch kernels, the skeleton as a dense kernel, so it may hold more
    # parameters than the training one.)
    assert inf['baseline']['params'] < inf['fused']['params']
    assert inf['baseline']['flops'] < inf['fused']['flops'] < inf['unfused']['flops']
    assert all(r['repeats'] == 2 for r in inf.values())
    tr = result['training']
    assert tr['bn_train/pd']['memory_mb'] > tr['bn_train/baseline']['memory_mb'] > 0
    with open(out_json) as f:
        assert json.load(f)['ratios'] == result['ratios']


def test_benchmark_detector_with_training_step(tmp_path, capsys):
    cfg_path = write_config(str(tmp_path / 'tiny_det.py'), DET_CONFIG)
    result = benchmark.main([cfg_path, '--shape', '64', '64', '--repeat-num', '2', '--num-warmup', '0', '--train'])
    out = capsys.readouterr().out
    assert len(table_rows(out, 'bn_train ')) == 2 and len(table_rows(out, 'bn_frozen ')) == 2
    assert result['fused_layers'] == 2 and result['inference']['fused']['flops'] is not None
    assert set(result['training']) == {'bn_train/pd', 'bn_train/baseline', 'bn_frozen/pd', 'bn_frozen/baseline'}


def test_get_flops_with_and_without_deploy(tmp_path, capsys):
    cls_path = write_config(str(tmp_path / 'tiny_cls.py'), CLS_CONFIG)
    unfused = get_flops.main([cls_path, '--shape', '32'])
    fused = get_flops.main([cls_path, '--shape', '32', '--deploy'])
    out = capsys.readouterr().out
    assert 'Model: unfused (branches), 2 PDConv2d' in out and 'Model: deployed (fused), 2 PDConv2d' in out
    assert 'Input shape: (3, 32, 32)' in out
    assert fused['flops'] < unfused['flops'] and fused['params'] != unfused['params']  # PD-B: see above
    det = get_flops.main([write_config(str(tmp_path / 'tiny_det.py'), DET_CONFIG), '--shape', '64', '64', '--deploy'])
    assert det['flops'] > 0


def test_training_bn_states_override_norm_eval(tmp_path):
    from torch.nn.modules.batchnorm import _BatchNorm

    from pddr_mm.deployment.benchmark import set_bn_state
    model = build_model(Config.fromfile(write_config(str(tmp_path / 'tiny_det.py'), DET_CONFIG))).train()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert not all(bn.training for bn in bns)  # mmdet's base config: backbone norm_eval=True
    set_bn_state(model, frozen=False)
    assert all(bn.training for bn in bns)
    set_bn_state(model, frozen=True)
    assert not any(bn.training for bn in bns)


def test_test_tool_show_dir_switches_on_the_visualization_hook():
    """tools/test.py --show-dir, as mmdet's: the config's visualization hook is enabled and told where to
    write (mmdet's hook takes test_out_dir, mmpretrain's out_dir); a config without one gets a clear error."""
    test_tool = load_tool('test')
    args = test_tool.parse_args(['cfg.py', 'ckpt.pth', '--show-dir', 'vis'])
    det = Config(dict(default_hooks=dict(visualization=dict(type='DetVisualizationHook'))))
    test_tool.trigger_visualization_hook(det, args)
    assert det.default_hooks.visualization == dict(type='DetVisualizationHook', enable=True, test_out_dir='vis')
    cls = Config(dict(default_hooks=dict(visualization=dict(type='VisualizationHook', enable=False))))
    test_tool.trigger_visualization_hook(cls, args)
    assert cls.default_hooks.visualization == dict(type='VisualizationHook', enable=True, out_dir='vis')
    with pytest.raises(ValueError, match='visualization hook'):
        test_tool.trigger_visualization_hook(Config(dict(default_hooks=dict())), args)


def test_kernel_mixing_counts_a_shared_layer_once_per_call():
    """A head conv shared by the FPN levels mixes its kernels once per level: timed alone, so must the mixing."""
    from pddr_mm import PDConv2d, switch_to_deploy
    from pddr_mm.deployment.benchmark import kernel_mixing

    class SharedTwice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = PDConv2d(4, 4, 3, padding=1, mode='B', branch_groups=2)

        def forward(self, inputs, data_samples=None, mode='tensor'):
            return self.conv(self.conv(inputs))

    model = SharedTwice().eval()
    switch_to_deploy(model)
    fn, calls = kernel_mixing(model, torch.randn(2, 4, 6, 6), None)
    fn()
    assert calls == 2
