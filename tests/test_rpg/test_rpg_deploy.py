"""RPG's deploy form: the plain network (switch_to_deploy), the converter's errors, ONNX, and the
degrees-of-freedom reports of get_flops.py and benchmark.py."""

import pytest
import torch
from deploy_fixtures import load_tool
from mmengine.config import Config
from rpg_fixtures import RESNET, classifier_config, rpg_layers, rpg_resnet

import pddr_mm
from pddr_mm.deployment.checkpoint import build_model
from random_bn import max_rel_error, randomize_bn


@pytest.mark.parametrize('permutation', ['full', 'block'])
def test_deployed_model_is_the_plain_network_computing_the_same(permutation):
    from mmdet.models.backbones import ResNet
    model = randomize_bn(rpg_resnet(permutation=permutation, rings='stage'))
    model.eval()  # mmdet's ResNet.train() returns None: no chaining
    plain = ResNet(**{k: v for k, v in RESNET.items() if k != 'type'})
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
        assert pddr_mm.switch_to_deploy(model) == 19 and pddr_mm.switch_to_deploy(model) == 0
        actual = model(x)
    assert all(max_rel_error(a, e) <= 1e-5 for a, e in zip(actual, expected))
    assert not rpg_layers(model) and not hasattr(model, 'rpg') and not pddr_mm.is_deployed(model)
    assert list(model.state_dict()) == list(plain.state_dict())  # the plain backbone's keys, in its order
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters())
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        plain.eval()
        assert all(max_rel_error(a, e) <= 1e-5 for a, e in zip(plain(x), expected))


def test_rpg_backbone_deploy_flag_builds_the_plain_backbone():
    from pddr_mm.rpg import RPGBackbone
    model = RPGBackbone(RESNET, ring_ratio=0.25, deploy=True)
    assert type(model).__name__ == 'ResNet' and not rpg_layers(model) and not hasattr(model, 'rpg')


def test_converter_refuses_a_checkpoint_of_another_generation(tmp_path):
    reparameterize = load_tool('model_converters/reparameterize')
    cfg_path = classifier_config(tmp_path)
    torch.save(dict(state_dict=build_model(Config.fromfile(cfg_path)).state_dict()), tmp_path / 'full.pth')
    other = classifier_config(tmp_path, 'block')
    with pytest.raises(SystemExit, match=r'rpg_cls_block.py: backbone.rpg.record: the checkpoint was made with another '
                       r"RPG generation \(seed=0, permutation='full'"):
        reparameterize.main([other, str(tmp_path / 'full.pth'), '--out-dir', str(tmp_path)])


def test_deployed_rpg_classifier_exports_to_onnx_and_runs_in_onnx_runtime(tmp_path):
    pytest.importorskip('onnxruntime')
    from pddr_mm.deployment.onnx import export_onnx, ort_session, reference_model, verify_onnx
    model = randomize_bn(build_model(Config.fromfile(classifier_config(tmp_path, 'block')))).eval()
    inputs = torch.randn(2, 3, 32, 32)
    info = export_onnx(model, inputs, str(tmp_path / 'rpg.onnx'), dynamic=True)
    assert info['fused_layers'] == 19 and info['conv_nodes'] == 20 and rpg_layers(model)  # the model is untouched
    session = ort_session(info['output_file'])
    assert verify_onnx(session, reference_model(model), inputs) <= 1e-4
    assert verify_onnx(session, reference_model(model), inputs[:1]) <= 1e-4  # another batch size


def test_get_flops_and_benchmark_report_the_degrees_of_freedom(tmp_path, capsys):
    cfg_path = classifier_config(tmp_path)
    info = load_tool('analysis_tools/get_flops').main([cfg_path, '--shape', '32'])
    model = build_model(Config.fromfile(cfg_path))
    ring = model.backbone.rpg.rings[0].numel()
    head_and_plain_layers = sum(p.numel() for n, p in model.named_parameters() if '.rpg.' not in n)
    assert info['trainable_params'] == ring + head_and_plain_layers
    assert info['deployed_params'] == info['plain_params'] > 3 * ring
    out = capsys.readouterr().out
    assert 'Model: unfused (ring), 19 RPGConv2d' in out and 'Trainable params (training form): ' in out

    benchmark = load_tool('analysis_tools/benchmark')
    result = benchmark.main([cfg_path, '--shape', '32', '32', '--repeat-num', '1', '--num-warmup', '0', '--train',
                             '--batch-size', '2', '--device', 'cpu'])
    inf = result['inference']
    assert result['rpg_ring'] == ring and inf['unfused']['trainable'] == info['trainable_params']
    assert inf['fused']['params'] == inf['baseline']['params']  # both with every conv + BN folded
    assert result['same_network']
    out = capsys.readouterr().out
    assert 'RPG degrees of freedom: ' in out and 'a fused RPG model is the plain one' in out


def test_cascade_rcnn_with_the_rpg_backbone_trains_the_ring_and_deploys_plain():
    """The RetinaNet RPG config's backbone inside Cascade R-CNN (issue 25: any detector): a loss step reaches the
    ring, and the deployed detector's features equal the ring model's."""
    import os.path as osp

    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from pddr_mm.rpg import RPGConv2d
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg = Config.fromfile(osp.join(root, 'configs', 'cascade_rcnn', 'cascade-rcnn_r50_fpn_1x_coco.py'))
    rpg = Config.fromfile(osp.join(root, 'configs', 'rpg', 'retinanet_rpg-r50_ring-1-4_fpn_1x_coco.py'))
    cfg.model.backbone = dict(rpg.model.backbone, trace_shape=(64, 64))
    model = randomize_bn(build_model(cfg))
    assert sum(isinstance(m, RPGConv2d) for m in model.backbone.modules()) == 52  # 48 block + 4 downsample convs
    ring = model.backbone.rpg.rings[0]

    g = torch.Generator().manual_seed(0)
    sample = DetDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64), ori_shape=(64, 64),
                                         scale_factor=(1.0, 1.0), batch_input_shape=(64, 64)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[8., 8., 40., 48.]]), labels=torch.tensor([3]))
    model.train()
    losses = model.loss(torch.randn(1, 3, 64, 64, generator=g), [sample])
    sum(v if isinstance(v, torch.Tensor) else sum(v) for k, v in losses.items() if 'loss' in k).backward()
    assert ring.grad is not None and ring.grad.abs().sum() > 0

    model.eval()
    x = torch.randn(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        expected = model.extract_feat(x)
        assert pddr_mm.switch_to_deploy(model) == 52
        actual = model.extract_feat(x)
    assert not any(isinstance(m, RPGConv2d) for m in model.modules())
    assert all(max_rel_error(a, e) <= 1e-5 for a, e in zip(actual, expected))
