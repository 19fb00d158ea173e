"""ONNX export of fused PDDR models (pddr_mm.deployment.onnx, tools/deployment/pytorch2onnx.py) in ONNX Runtime.

Tiny PD-A / PD-B ResNet-18 classifiers and a PD-B RetinaNet (PDResNet, PDFPN, PDRetinaHead), random BN
statistics so that fold errors show, checked against the unfused model (branch by branch).
"""
import os.path as osp

import pytest

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

import onnx  # noqa: E402
import torch  # noqa: E402
from deploy_fixtures import CLS_CONFIG, ROOT, load_tool, write_config  # noqa: E402
from mmengine.config import Config  # noqa: E402

from pddr_mm.deployment.checkpoint import build_model, convert_checkpoint, load_model  # noqa: E402
from pddr_mm.deployment.configs import to_plain_config  # noqa: E402
from pddr_mm.deployment.inputs import make_inputs  # noqa: E402
from pddr_mm.deployment.onnx import (check_batch_sizes, export_onnx, ort_session, reference_model,  # noqa: E402
                                     run_onnx)
from pddr_mm.deployment.onnx_graph import count_ops  # noqa: E402
from random_bn import randomize_bn  # noqa: E402


def count_all_ops(graph, op_type: str) -> int:
    """How many ``op_type`` nodes the file holds, in every subgraph (both branches of an If)."""
    graph = getattr(graph, 'graph', graph)
    return sum((node.op_type == op_type) + sum(count_all_ops(onnx.helper.get_attribute_value(a), op_type)
                                               for a in node.attribute if a.type == onnx.AttributeProto.GRAPH)
               for node in graph.node)


pytorch2onnx = load_tool('deployment/pytorch2onnx')
benchmark = load_tool('analysis_tools/benchmark')
TOL = 1e-4
PD = dict(branch_groups=4, reduction=4)


def classifier_cfg(mode: str) -> Config:
    """A PD ResNet-18 at 1/8 width (8-16-32-64) in mmpretrain."""
    return Config(dict(
        default_scope='mmpretrain',
        model=dict(type='ImageClassifier',
                   data_preprocessor=dict(type='ClsDataPreprocessor', mean=[127.5] * 3, std=[64.0] * 3, num_classes=3),
                   backbone=dict(type='PDResNet', depth=18, base_channels=8, stem_channels=8, mode=mode, **PD),
                   neck=dict(type='GlobalAveragePooling'),
                   head=dict(type='LinearClsHead', num_classes=3, in_channels=64))))


def retinanet_cfg() -> Config:
    """retinanet_pd-b-r50_pd-b-fpn_pd-b-head_1x_coco.py shrunk: PD-B ResNet-18 at 1/8 width, PD-B FPN and head."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs/retinanet/retinanet_pd-b-r50_pd-b-fpn_pd-b-head_1x_coco.py'))
    cfg.model.backbone.update(depth=18, base_channels=8, stem_channels=8, out_indices=(1, 2, 3), init_cfg=None, **PD)
    cfg.model.neck.update(in_channels=[16, 32, 64], out_channels=16, start_level=0, num_outs=3,
                          add_extra_convs=False, **PD)
    cfg.model.bbox_head.update(num_classes=2, in_channels=16, feat_channels=16, stacked_convs=1, **PD)
    cfg.model.bbox_head.anchor_generator.strides = [8, 16, 32]
    return cfg


def export_and_check(cfg: Config, shape, tmp_path, name: str):
    model = randomize_bn(load_model(cfg), 3)
    data = make_inputs(model, 2, shape)
    info = export_onnx(model, data['inputs'], str(tmp_path / f'{name}.onnx'), dynamic=True,
                       data_samples=data['data_samples'])
    session, reference = ort_session(info['output_file']), reference_model(model)
    errors = check_batch_sizes(session, reference, data['inputs'], (1, 2, 5), data['data_samples'])
    assert max(errors.values()) < TOL, errors
    wider = torch.cat([data['inputs'], data['inputs'].flip(-1)], dim=-1)  # height and width are dynamic too
    assert check_batch_sizes(session, reference, wider, (3, ), data['data_samples'])[3] < TOL
    plain = build_model(to_plain_config(cfg)).eval()
    plain_info = export_onnx(plain, data['inputs'], str(tmp_path / f'{name}_plain.onnx'), dynamic=True,
                             data_samples=data['data_samples'])
    return info, plain_info


@pytest.mark.parametrize('mode', ['A', 'B'])
def test_classifier_dynamic_batch_matches_unfused(mode, tmp_path):
    info, plain = export_and_check(classifier_cfg(mode), (32, 32), tmp_path, f'pd-{mode}')
    assert info['fused_layers'] == 16 and info['output_names'] == ['output0']
    # PD-A is the plain network after fusion; PD-B adds no convolution either (one Conv per layer, in a Loop)
    assert info['conv_nodes'] == plain['conv_nodes'] == 20  # stem, 16 block convs, 3 downsamples
    assert info['loops'] == (16 if mode == 'B' else 0) and plain['loops'] == 0
    graph = onnx.load(info['output_file'])
    assert not any(node.domain == 'pddr' for node in graph.graph.node)  # plain ONNX, nothing custom left
    assert count_ops(graph, 'Loop') == info['loops'] and count_ops(graph, 'Conv') == info['conv_nodes']
    assert count_ops(onnx.load(plain['output_file']), 'Conv') == 20
    # the file itself holds each PD-B layer's Conv twice: in the Loop body and in the If's batch-1 branch
    assert count_all_ops(graph, 'Conv') == 20 + info['loops']


def test_pd_b_retinanet_dynamic_batch_matches_unfused(tmp_path):
    info, plain = export_and_check(retinanet_cfg(), (64, 64), tmp_path, 'retinanet')
    assert len(info['output_names']) == 6  # cls scores and box deltas of 3 levels, before decoding and NMS
    # the shared head runs its 2 PD-B convs on each of the 3 levels: 19 + 2 * 3 per-sample Loops
    assert info['fused_layers'] == 21 and info['loops'] == 25
    assert info['conv_nodes'] == plain['conv_nodes']  # one Conv per layer and level run, as in the plain model


@pytest.mark.parametrize('mode', ['A', 'B'])
def test_convmodule_norm_after_a_pd_layer_is_folded_before_export(mode, tmp_path):
    """A conv_cfg-swapped PDConv2d keeps its ConvModule's BN; the export folds it (fuse_pd_conv_bn): no
    BatchNormalization node is left, and the file still equals the unfused model at batch 1 and 3."""
    cfg = Config.fromfile(write_config(str(tmp_path / 'tiny.py'), CLS_CONFIG.replace("mode='B'", f"mode='{mode}'")))
    model = randomize_bn(load_model(cfg), 6)
    data = make_inputs(model, 3, (32, 32))
    info = export_onnx(model, data['inputs'], str(tmp_path / 'tiny.onnx'), dynamic=True,
                       data_samples=data['data_samples'])
    assert info['fused_layers'] == 2 and count_all_ops(onnx.load(info['output_file']), 'BatchNormalization') == 0
    errors = check_batch_sizes(ort_session(info['output_file']), reference_model(model), data['inputs'], (1, 3),
                               data['data_samples'])
    assert max(errors.values()) < TOL, errors


def test_static_export_is_exact_and_rejects_other_batches(tmp_path):
    import onnxruntime
    model = randomize_bn(load_model(classifier_cfg('B')), 4)
    data = make_inputs(model, 3, (32, 32))
    info = export_onnx(model, data['inputs'], str(tmp_path / 'static.onnx'), dynamic=False)
    assert info['loops'] == 0  # the batch-folded grouped Conv, valid at the traced batch only
    session = ort_session(info['output_file'])
    assert check_batch_sizes(session, reference_model(model), data['inputs'], (3, ))[3] < TOL
    with pytest.raises(ValueError, match='exported with a static shape'):
        run_onnx(session, data['inputs'][:2])
    with pytest.raises(onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument):  # the runtime itself too
        session.run(None, {'input': data['inputs'][:2].numpy()})


def test_tool_training_and_deploy_checkpoints(tmp_path, capsys):
    cfg_path = write_config(str(tmp_path / 'tiny_cls.py'), CLS_CONFIG)
    cfg = Config.fromfile(cfg_path)
    ckpt = str(tmp_path / 'train.pth')
    torch.save(dict(meta={}, state_dict=randomize_bn(build_model(cfg), 6).state_dict()), ckpt)
    out = str(tmp_path / 'train.onnx')
    info = pytorch2onnx.main([cfg_path, ckpt, '--output-file', out, '--shape', '32', '--dynamic-export', '--verify',
                              '--opset', '11'])
    printed = capsys.readouterr().out
    assert 'unfused PyTorch model (branches), batch 2' in printed and 'largest relative error' in printed
    assert info['max_rel_error'] < TOL and info['loops'] == 2

    deploy_cfg, deploy_ckpt, _ = convert_checkpoint(cfg, ckpt, str(tmp_path / 'deploy'))
    info = pytorch2onnx.main([deploy_cfg, deploy_ckpt, '--output-file', str(tmp_path / 'deploy.onnx'), '--shape', '32',
                              '--batch-size', '2', '--verify'])
    assert 'fused PyTorch model (deploy checkpoint), batch 2' in capsys.readouterr().out
    assert info['max_rel_error'] < TOL and info['input_shape'] == [2, 3, 32, 32]


def test_bad_checkpoint_or_config_is_a_clear_error(tmp_path):
    cfg_path = write_config(str(tmp_path / 'tiny_cls.py'), CLS_CONFIG)
    cfg = Config.fromfile(cfg_path)
    out = ['--output-file', str(tmp_path / 'x.onnx')]
    plain_ckpt = str(tmp_path / 'plain.pth')  # the plain baseline's weights: not this PDDR model
    torch.save(dict(state_dict=build_model(to_plain_config(cfg)).state_dict()), plain_ckpt)
    with pytest.raises(RuntimeError, match=r'plain.pth does not fit the model of .*tiny_cls.py'):
        pytorch2onnx.main([cfg_path, plain_ckpt] + out)
    with pytest.raises(FileNotFoundError, match='missing.pth does not exist'):
        pytorch2onnx.main([cfg_path, str(tmp_path / 'missing.pth')] + out)
    no_model = write_config(str(tmp_path / 'no_model.py'), "default_scope = 'mmpretrain'\n")
    with pytest.raises(ValueError, match='no_model.py has no model dict'):
        pytorch2onnx.main([no_model, plain_ckpt] + out)


def test_benchmark_onnxruntime_backend(tmp_path, capsys):
    cfg_path = write_config(str(tmp_path / 'tiny_cls.py'), CLS_CONFIG)
    result = benchmark.main([cfg_path, '--backend', 'onnxruntime', '--shape', '32', '32', '--batch-size', '2',
                             '--repeat-num', '2', '--num-warmup', '1'])
    out = capsys.readouterr().out
    assert 'inference in ONNX Runtime' in out and 'latency ratio fused/baseline:' in out
    rows = [[c.strip() for c in line.split('|')] for line in out.splitlines() if line.startswith(('fused', 'baseline'))]
    assert [r[0] for r in rows] == ['fused', 'baseline'] and all(float(r[1]) > 0 for r in rows)
    inf = result['inference']
    assert inf['fused']['loops'] == 2 and inf['fused']['conv_nodes'] == inf['baseline']['conv_nodes'] == 3
    assert result['ratios']['fused/baseline'] > 0
    with pytest.raises(ValueError, match='CPU only'):
        benchmark.main([cfg_path, '--backend', 'onnxruntime', '--train'])


def test_detector_decoding_boxes_in_tensor_mode_is_a_clear_error(tmp_path, monkeypatch):
    """mmdet 3.x's box coders import mmdet 2.x's export helpers when traced for ONNX (two-stage detectors)."""
    def export(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'mmdet.core'", name='mmdet.core')

    monkeypatch.setattr(torch.onnx, 'export', export)
    model = load_model(classifier_cfg('A'))
    with pytest.raises(RuntimeError, match="decodes boxes in mode='tensor'"):
        export_onnx(model, make_inputs(model, 1, (32, 32))['inputs'], str(tmp_path / 'x.onnx'))
