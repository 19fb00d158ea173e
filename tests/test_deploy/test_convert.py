"""tools/model_converters/reparameterize.py: training checkpoint -> deploy checkpoint + config, identical predictions and metrics."""
import pickle

import pytest
import torch
from deploy_fixtures import CLS_CONFIG, DET_CONFIG, load_tool, write_config
from mmengine.config import Config

from pddr_mm.deployment import deploy_model_cfg, forward_path_model_cfg, plain_model_cfg, set_forward_path
from pddr_mm.deployment.checkpoint import build_model
from pddr_mm.deployment.inputs import make_inputs
from pddr_mm.ops import PDConv2d, is_deployed
from random_bn import randomize_bn

deploy_tool = load_tool('model_converters/reparameterize')
test_tool = load_tool('test')
META = dict(dataset_meta=dict(classes=('a', 'b', 'c')), epoch=3, experiment_name='tiny')


def save_training_checkpoint(cfg_path: str, ckpt_path: str, seed: int) -> None:
    """A checkpoint as a training run writes it (meta, state_dict, optimizer), with random BN statistics.

    Seeded weights too: the detector tests compare detections in order, which near-equal scores of other
    random weights could swap."""
    torch.manual_seed(seed)
    model = build_model(Config.fromfile(cfg_path))
    randomize_bn(model, seed)
    torch.save(dict(meta=META, state_dict=model.state_dict(), optimizer=dict(state={})), ckpt_path)


@pytest.fixture(scope='module')
def cls_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('cls')
    cfg_path = write_config(str(tmp / 'tiny_cls.py'), CLS_CONFIG)
    ckpt = str(tmp / 'epoch_3.pth')
    save_training_checkpoint(cfg_path, ckpt, seed=3)
    deploy_cfg, deploy_ckpt = deploy_tool.main([cfg_path, ckpt, '--out-dir', str(tmp / 'deploy')])
    return tmp, cfg_path, ckpt, deploy_cfg, deploy_ckpt


def test_deploy_checkpoint_and_config(cls_files):
    _, _, _, deploy_cfg, deploy_ckpt = cls_files
    ckpt = torch.load(deploy_ckpt, map_location='cpu')
    assert ckpt['meta']['dataset_meta'] == META['dataset_meta'] and ckpt['meta']['epoch'] == 3
    assert ckpt['meta']['pddr_deploy']['fused_layers'] == 2
    assert 'optimizer' not in ckpt and not any('branches.' in k for k in ckpt['state_dict'])
    cfg = Config.fromfile(deploy_cfg)
    assert cfg.model.backbone.conv_cfg.deploy is True and cfg.load_from is None
    model = build_model(cfg)
    assert is_deployed(model)


def run_test_tool(tmp, cfg, ckpt, name, *extra):
    out = str(tmp / f'{name}.pkl')
    metrics = test_tool.main([cfg, ckpt, '--work-dir', str(tmp / name), '--out', out, *extra])
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    return metrics, torch.stack([p['pred_score'] for p in preds])


def test_metrics_reproduced_through_runner(cls_files):
    tmp, cfg_path, ckpt, deploy_cfg, deploy_ckpt = cls_files
    metrics, scores = run_test_tool(tmp, cfg_path, ckpt, 'train_ckpt',
                                    '--cfg-options', 'custom_hooks=[]')  # unfused, no deploy hook
    d_metrics, d_scores = run_test_tool(tmp, deploy_cfg, deploy_ckpt, 'deploy_ckpt')
    h_metrics, h_scores = run_test_tool(tmp, cfg_path, ckpt, 'hook', '--deploy')
    assert metrics == d_metrics == h_metrics
    assert torch.allclose(d_scores, scores, rtol=0, atol=1e-5)
    assert torch.allclose(h_scores, scores, rtol=0, atol=1e-5)


def test_training_checkpoint_in_deploy_model_fails_clearly(cls_files):
    tmp, _, ckpt, deploy_cfg, _ = cls_files
    with pytest.raises(RuntimeError, match=r'training branches\. Convert the checkpoint first: python tools/model_converters/reparameterize.py'):
        test_tool.main([deploy_cfg, ckpt, '--work-dir', str(tmp / 'wrong1')])


def test_deploy_checkpoint_in_training_model_fails_clearly(cls_files):
    tmp, cfg_path, _, _, deploy_ckpt = cls_files
    expected = r'fused \(deploy\) weights .* Use the deploy config written by tools/model_converters/reparameterize.py'
    with pytest.raises(RuntimeError, match=expected):
        test_tool.main([cfg_path, deploy_ckpt, '--work-dir', str(tmp / 'wrong2')])


def test_detector_round_trip(tmp_path):
    cfg_path = write_config(str(tmp_path / 'tiny_retinanet.py'), DET_CONFIG)
    ckpt = str(tmp_path / 'det.pth')
    save_training_checkpoint(cfg_path, ckpt, seed=4)
    deploy_cfg, deploy_ckpt = deploy_tool.main([cfg_path, ckpt, '--out-dir', str(tmp_path)])

    model = build_model(Config.fromfile(cfg_path)).eval()
    model.load_state_dict(torch.load(ckpt)['state_dict'])
    set_forward_path(model, 'branches')
    fused = build_model(Config.fromfile(deploy_cfg)).eval()
    fused.load_state_dict(torch.load(deploy_ckpt)['state_dict'])
    assert is_deployed(fused) and sum(isinstance(m, PDConv2d) for m in fused.modules()) == 2
    data = make_inputs(model, 2, (64, 64))
    with torch.no_grad():
        expected = model(**data, mode='predict')
        actual = fused(**make_inputs(model, 2, (64, 64)), mode='predict')
    assert len(actual) == 2 and all(len(e.pred_instances.scores) > 0 for e in expected)
    for a, e in zip(actual, expected):
        assert torch.allclose(a.pred_instances.scores, e.pred_instances.scores, atol=1e-5)
        assert torch.allclose(a.pred_instances.bboxes, e.pred_instances.bboxes, atol=1e-3)


def test_config_rewriting():
    model = dict(
        type='RetinaNet',
        backbone=dict(type='PDResNet', depth=18, mode='B', init_cfg=dict(type='Pretrained', checkpoint='plain.pth')),
        neck=dict(type='FPN', conv_cfg=dict(type='PDConv2d', mode='A'), init_cfg=[
            dict(type='Pretrained', checkpoint='x.pth'), dict(type='Xavier', layer='Conv2d')]),
        bbox_head=dict(type='RetinaHead', conv_cfg=None))
    deploy = deploy_model_cfg(model)
    assert deploy['backbone']['deploy'] is True and deploy['backbone']['init_cfg'] is None
    assert deploy['neck']['conv_cfg'] == dict(type='PDConv2d', mode='A', deploy=True)
    assert deploy['neck']['init_cfg'] == [dict(type='Xavier', layer='Conv2d')]
    assert 'deploy' not in deploy['neck'] and 'deploy' not in deploy['bbox_head']
    plain = plain_model_cfg(model)
    assert plain['backbone']['type'] == 'ResNet' and 'mode' not in plain['backbone']
    assert plain['neck']['conv_cfg'] == dict(type='Conv2d')
    assert model['backbone']['type'] == 'PDResNet'  # the input is not modified
    unfused = forward_path_model_cfg(model, 'branches')  # backbone, neck conv_cfg alike; plain head untouched
    assert unfused['backbone']['forward_path'] == unfused['neck']['conv_cfg']['forward_path'] == 'branches'
    assert 'forward_path' not in unfused['neck'] and 'forward_path' not in unfused['bbox_head']
    assert 'forward_path' not in model['backbone']


def test_third_party_pd_types_are_left_alone():
    """Only pddr_mm's own types are rewritten: another package's ``PDHead`` taking ``deploy`` is not PDDR."""
    from mmengine.registry import MODELS

    from pddr_mm.deployment import count_pddr_cfgs, is_pddr_module_cfg

    class PDHead(torch.nn.Module):
        def __init__(self, mode='A', deploy=False):
            super().__init__()

    MODELS.register_module(name='PDHead', module=PDHead, force=True)
    try:
        model = dict(type='RetinaNet', backbone=dict(type='PDResNet', depth=18, mode='A'),
                     bbox_head=dict(type='PDHead', mode='A'), neck=dict(type='PDUnregistered', deploy=False))
        assert is_pddr_module_cfg(model['backbone']) and not is_pddr_module_cfg(model['bbox_head'])
        assert not is_pddr_module_cfg(model['neck'])  # unknown PD* type carrying PDDR arguments
        assert count_pddr_cfgs(model) == 1
        assert deploy_model_cfg(model)['bbox_head'] == plain_model_cfg(model)['bbox_head'] == model['bbox_head']
        assert plain_model_cfg(model)['neck'] == model['neck'] and deploy_model_cfg(model)['backbone']['deploy']
    finally:
        MODELS._module_dict.pop('PDHead')


# the project's full PD-B RetinaNet (PDResNet + PDFPN + PDRetinaHead), shrunk to seconds on a CPU
PD_RETINANET = 'configs/retinanet/retinanet_pd-b-r50_pd-b-fpn_pd-b-head_1x_coco.py'
SHRINK = {'model.backbone.depth': 18, 'model.backbone.base_channels': 16, 'model.backbone.branch_groups': 8,
          'model.neck.in_channels': [16, 32, 64, 128], 'model.neck.out_channels': 16, 'model.neck.branch_groups': 8,
          'model.bbox_head.in_channels': 16, 'model.bbox_head.feat_channels': 16, 'model.bbox_head.stacked_convs': 1,
          'model.bbox_head.branch_groups': 8, 'model.bbox_head.num_classes': 2}
SHRINK_ARGS = [f"{k}={str(v).replace(' ', '')}" for k, v in SHRINK.items()]  # as typed after --cfg-options


def test_project_pd_retinanet_round_trip_and_plain(tmp_path):
    from deploy_fixtures import ROOT

    from pddr_mm.deployment import to_plain_config
    cfg_path = f'{ROOT}/{PD_RETINANET}'
    cfg = Config.fromfile(cfg_path)
    cfg.merge_from_dict(SHRINK)
    torch.manual_seed(6)  # detections are compared in order: fixed weights, no chance of a near-tie swap
    model = build_model(cfg).eval()
    randomize_bn(model, 6)
    ckpt = str(tmp_path / 'pd_retinanet.pth')
    torch.save(dict(meta=META, state_dict=model.state_dict()), ckpt)
    deploy_cfg, deploy_ckpt = deploy_tool.main(
        [cfg_path, ckpt, '--out-dir', str(tmp_path), '--cfg-options', *SHRINK_ARGS])

    written = Config.fromfile(deploy_cfg)
    assert written.model.backbone.deploy and written.model.neck.deploy and written.model.bbox_head.deploy
    assert written.model.backbone.init_cfg is None  # the ImageNet Pretrained init is dropped
    fused = build_model(written).eval()
    fused.load_state_dict(torch.load(deploy_ckpt)['state_dict'])
    assert is_deployed(fused)
    set_forward_path(model, 'branches')
    with torch.no_grad():
        expected = model(**make_inputs(model, 1, (64, 64)), mode='predict')
        actual = fused(**make_inputs(model, 1, (64, 64)), mode='predict')
    assert len(expected[0].pred_instances.scores) > 0
    assert torch.allclose(actual[0].pred_instances.scores, expected[0].pred_instances.scores, atol=1e-5)

    plain_cfg = to_plain_config(cfg)
    assert (plain_cfg.model.backbone.type, plain_cfg.model.neck.type, plain_cfg.model.bbox_head.type) == (
        'ResNet', 'FPN', 'RetinaHead')
    plain = build_model(plain_cfg)
    assert not any(isinstance(m, PDConv2d) for m in plain.modules())
