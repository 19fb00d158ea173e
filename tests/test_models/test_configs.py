"""Every shipped config builds, trains one step and predicts; PDDR ones fuse exactly.

Fusion check, per family: in eval mode with random BN statistics, the tensors of
``model(inputs, mode='tensor')`` of the fused model (``switch_to_deploy``) match the unfused
(``forward_path='branches'``) ones to 1e-5 relative, and the detections after NMS are the same.
"""
import pytest
import torch
from mmpretrain.models.backbones.resnet import ResNet as MMPretrainResNet

import pddr_mm
from _helpers import (build_classifier, build_detector, cls_batch, det_batch, flatten, load_cfg, set_branches,
                      train_step)
from pddr_mm.ops import PDConv2d
from random_bn import max_rel_error, randomize_bn

TOL = 1e-5
DETECTORS = [
    ('retinanet/retinanet_r50_fpn_1x_coco.py', 0),
    ('retinanet/retinanet_pd-a-r50_fpn_1x_coco.py', 16),
    ('retinanet/retinanet_pd-b-r50_fpn_1x_coco.py', 16),
    ('retinanet/retinanet_pd-b-r50_pd-b-fpn_pd-b-head_1x_coco.py', 16 + 5 + 8),
    ('cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py', 0),
    ('cascade_rcnn/cascade-rcnn_pd-a-r50_fpn_1x_coco.py', 16),
    ('cascade_rcnn/cascade-rcnn_pd-b-r50_fpn_1x_coco.py', 16),
    ('yolo/yolov3_pd-b-mobilenetv2_8xb24-320-300e_coco.py', 18),  # PDDRBackbone: the conv + BN pairs found
]
CLASSIFIERS = [
    ('resnet/resnet18_8xb32_in1k.py', 0),
    ('resnet/pd-a-resnet18_8xb32_in1k.py', 16),
    ('resnet/pd-b-resnet18_8xb32_in1k.py', 16),
    ('resnet/resnet50_8xb32_in1k.py', 0),
    ('resnet/pd-a-resnet50_8xb32_in1k.py', 16),
    ('resnet/pd-b-resnet50_8xb32_in1k.py', 16),
]


def _network_outputs(model, batch):
    """The tensors the network computes: ``mode='tensor'``, and for two-stage detectors the features and
    raw RPN outputs, since their RoI stage runs on proposals decoded from the RPN (see below)."""
    full = flatten(model(batch['inputs'], batch['data_samples'], mode='tensor'))
    if not getattr(model, 'with_rpn', False):
        return full, full
    feats = model.extract_feat(batch['inputs'])
    return flatten(feats) + flatten(model.rpn_head(feats)), full


def _check_fusion(model, data, num_pd: int, compare_predictions) -> None:
    randomize_bn(model, seed=3)
    model.eval()
    assert set_branches(model) == num_pd
    batch = model.data_preprocessor(data, False)
    with torch.no_grad():
        ref_strict, ref_full = _network_outputs(model, batch)
        ref_pred = model.test_step(data)
        assert pddr_mm.switch_to_deploy(model) == num_pd and pddr_mm.is_deployed(model)
        strict, full = _network_outputs(model, batch)
        pred = model.test_step(data)
    assert len(strict) == len(ref_strict) > 0 and len(full) == len(ref_full) > 0
    errors = [max_rel_error(a, b) for a, b in zip(strict, ref_strict)]
    full_errors = [max_rel_error(a, b) for a, b in zip(full, ref_full)]
    print(f' fused vs unfused: {len(strict)} network tensors, max rel err {max(errors):.2e}; '
          f"mode='tensor' ({len(full)} tensors) max rel err {max(full_errors):.2e}")
    assert max(errors) <= TOL
    # two-stage detectors: the RoI heads pool at proposals decoded (exp of the regression, top-k, NMS) from
    # the RPN, which amplifies the ~1e-7 differences above; with random BN their outputs agree to ~1e-4
    assert max(full_errors) <= (TOL if strict is full else 1e-3)
    compare_predictions(pred, ref_pred)


def _same_detections(pred, ref):
    """Same number of detections, and every box clearly above the lowest kept score has a partner with the same
    label and score in the other set (order-free: random weights give many equal scores, whose order is
    arbitrary). Boxes tied with the lowest kept score (random BN saturates many scores at 1.0) are kept or
    dropped by the top-k's order among ties, which the ~1e-7 differences of the fused network decide."""
    for p, r in zip(pred, ref):
        p, r = p.pred_instances, r.pred_instances
        assert len(p) == len(r) > 0
        clear = max(float(p.scores.min()), float(r.scores.min())) + 1e-4
        # random BN makes the regression deltas large; box decoding (exp, three times in Cascade R-CNN)
        # amplifies the ~1e-6 relative difference of the fused network outputs to ~0.01 pixel (of 128)
        diff = (p.bboxes[:, None] - r.bboxes[None]).abs()
        diff[p.bboxes[:, None] == r.bboxes[None]] = 0  # YOLOv3's exp() decoding may give inf in both
        dist = diff.amax(-1)
        dist[p.labels[:, None] != r.labels[None]] = float('inf')
        dist[(p.scores[:, None] - r.scores[None]).abs() > 1e-4] = float('inf')
        p_clear, r_clear = p.scores > clear, r.scores > clear  # none where every kept score is tied
        assert (dist.amin(1)[p_clear] <= 5e-2).all() and (dist.amin(0)[r_clear] <= 5e-2).all()


def _same_scores(pred, ref):
    for p, r in zip(pred, ref):
        assert torch.allclose(p.pred_score, r.pred_score, rtol=1e-4, atol=1e-6)
        assert torch.equal(p.pred_label, r.pred_label)


@pytest.mark.parametrize('path,num_pd', DETECTORS, ids=[p for p, _ in DETECTORS])
def test_detector_config(path, num_pd):
    cfg = load_cfg(path)
    assert 'pddr_mm' in cfg.custom_imports['imports']
    model = build_detector(cfg.model)
    data = det_batch(size=128)
    losses = train_step(model, data)
    print(f'\n{path}: loss {losses["loss"].item():.4f}', end='')
    model.eval()
    with torch.no_grad():
        preds = model.test_step(data)
    assert len(preds) == 2 and all('bboxes' in p.pred_instances for p in preds)
    if num_pd:
        # relax the score threshold so random weights still leave boxes to compare
        _set_score_thr(model, 0.0)
        _check_fusion(model, data, num_pd, _same_detections)


def _set_score_thr(model, thr: float) -> None:
    for head in (getattr(model, 'bbox_head', None), getattr(model, 'roi_head', None)):
        if head is not None and head.test_cfg is not None:
            if 'score_thr' in head.test_cfg:
                head.test_cfg.score_thr = thr
            if 'conf_thr' in head.test_cfg:  # YOLOv3's objectness threshold
                head.test_cfg.conf_thr = thr
            if 'rcnn' in head.test_cfg:
                head.test_cfg.rcnn.score_thr = thr


@pytest.mark.parametrize('path,num_pd', CLASSIFIERS, ids=[p for p, _ in CLASSIFIERS])
def test_classifier_config(path, num_pd):
    cfg = load_cfg(path)
    assert 'pddr_mm' in cfg.custom_imports['imports']
    assert cfg.train_cfg.max_epochs == 90 and cfg.param_scheduler.milestones == [30, 60]
    model = build_classifier(cfg.model)
    # PDResNet in an mmpretrain config is mmpretrain's ResNet: BN trains (norm_eval=False) by default
    assert isinstance(model.backbone, MMPretrainResNet) and model.backbone.norm_eval is False
    data = cls_batch(size=64)
    losses = train_step(model, data)
    print(f'\n{path}: loss {losses["loss"].item():.4f}', end='')
    model.eval()
    with torch.no_grad():
        preds = model.test_step(data)
    assert len(preds) == 2 and preds[0].pred_score.shape == (10, )
    if num_pd:
        _check_fusion(model, data, num_pd, _same_scores)


# PDDRBackbone configs on mmpretrain's MobileViT recipe: (config, base config, converted layers)
MOBILEVIT = [
    ('mobilevit/pd-a-mobilevit-small_8xb128_in1k.py', 'mobilevit/mobilevit-small_8xb128_in1k.py', 14),
    ('mobilevit/pd-b-mobilevit-small_8xb128_in1k.py', 'mobilevit/mobilevit-small_8xb128_in1k.py', 14),
    ('mobilevit/pd-b-mobilevit-xxsmall_8xb128_in1k.py', 'mobilevit/mobilevit-xxsmall_8xb128_in1k.py', 14),
]


@pytest.mark.parametrize('path,base,num_pd', MOBILEVIT, ids=[p for p, _, _ in MOBILEVIT])
def test_mobilevit_config(path, base, num_pd):
    import os

    import mmpretrain
    cfg = load_cfg(path)
    base_cfg = load_cfg(os.path.join(os.path.dirname(mmpretrain.__file__), '.mim', 'configs', base))
    assert 'pddr_mm' in cfg.custom_imports['imports']
    # mmpretrain's recipe unchanged; only the backbone is wrapped
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg', 'train_dataloader', 'data_preprocessor'):
        assert _unscoped(cfg[key]) == _unscoped(base_cfg[key]), key
    assert cfg.model.backbone.type == 'PDDRBackbone' and cfg.model.backbone.backbone == base_cfg.model.backbone
    model = build_classifier(cfg.model)
    # the configured branch_groups serves every converted layer: only the 3-channel stem and the depthwise
    # layers (where a group branch cannot exist) go without one
    no_group = [n for n, m in model.backbone.named_modules()
                if isinstance(m, PDConv2d) and m.groups == 1 and 'group' not in m.branch_names]
    assert no_group == ['stem.conv'], no_group
    data = cls_batch(size=64)
    losses = train_step(model, data)
    print(f'\n{path}: loss {losses["loss"].item():.4f}', end='')
    _check_fusion(model, data, num_pd, _same_scores)


def _unscoped(cfg):
    """A config value without the ``_scope_`` keys that a 'mmpretrain::' base adds."""
    if isinstance(cfg, dict):
        return {k: _unscoped(v) for k, v in cfg.items() if k != '_scope_'}
    if isinstance(cfg, (list, tuple)):
        return [_unscoped(v) for v in cfg]
    return cfg
