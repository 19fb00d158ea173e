"""mmdet's config zoo with the backbone wrapped in PDDRBackbone (PD-B): one config per backbone family.

Sampling (to stay within about 3 minutes of CI on 2 cores): every shipped config's own text and the text
of the files it inherits from are searched for ``backbone=dict(type=...)``; the first type found is the
config's backbone family (ResNet, ResNeXt, RegNet, HRNet, Res2Net, ResNeSt, MobileNetV2, CSPDarknet,
CSPNeXt, Darknet, EfficientNet, HourglassNet, Swin, ...). Per family the config with the shortest file name
(ties: alphabetical) whose parsed model really has that backbone type is run: usually the family's plain
Faster R-CNN / RetinaNet config, the smallest of its variants. ``PDDR_ZOO_FAMILIES=all`` runs every config
of every family instead (slow).

Per config: the backbone (no pretrained init) is wrapped as ``dict(type='PDDRBackbone', backbone=...,
mode='B')``; the detector builds, runs a loss + backward and a prediction step on a 64x64 image, and with
random BN statistics (eval mode, float64) its fused features (``extract_feat``: backbone and neck) equal
the unfused ones to 1e-10. Skipped only: a backbone with no conv + BN pair to convert (LayerNorm transformers, GN), said
with the conversion's reasons, and a config that fails the same way with its plain backbone here (a
GPU-only op, a package it needs).
"""
import glob
import os
import re
import time
import warnings
from collections import defaultdict

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm

import pddr_mm
from _helpers import build_detector, chain_text, fails_alike, loss_and_predict, set_branches
from pddr_mm.surgery import NothingConvertedError
from pddr_mm.ops import PDConv2d
from random_bn import max_rel_error, randomize_bn

TOL = 1e-10  # float64
_BACKBONE = re.compile(r"backbone\s*=\s*dict\(\s*(?:_delete_\s*=\s*True\s*,\s*)?type\s*=\s*['\"]([\w.]+)['\"]")
# the detectors a family is sampled with first: the common ones, which need nothing beyond boxes and masks
_PREFERRED = ('retinanet', 'faster-rcnn', 'mask-rcnn', 'fcos', 'atss', 'yolo', 'rtmdet', 'ssd')


def _preference(path: str):
    name = os.path.basename(path)
    return (not name.startswith(_PREFERRED), len(name), path)


def _families():
    import mmdet
    root = os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'configs')
    candidates = defaultdict(list)
    for path in glob.glob(os.path.join(root, '**', '*.py'), recursive=True):
        if f'{os.sep}_base_{os.sep}' in path:
            continue
        found = _BACKBONE.search(chain_text(path))
        if found:
            candidates[found.group(1).split('.')[-1]].append(path)
    every = os.environ.get('PDDR_ZOO_FAMILIES') == 'all'
    selected = []
    for family, paths in sorted(candidates.items()):
        for path in sorted(paths, key=_preference):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore')
                    model = Config.fromfile(path).get('model')
            except Exception:  # a config that needs something absent here
                continue
            backbone = model.get('backbone') if isinstance(model, dict) else None
            if isinstance(backbone, dict) and str(backbone.get('type')).split('.')[-1] == family:
                selected.append((family, os.path.relpath(path, root), model))
                if not every:
                    break
    return selected


_SELECTED = _families()


def _wrapped(model_cfg):
    cfg = Config(dict(model=model_cfg)).model  # a copy
    inner = cfg.backbone
    inner.init_cfg = None  # no download
    if 'pretrained' in inner:
        inner.pretrained = None
    cfg.backbone = dict(type='PDDRBackbone', backbone=inner, mode='B', trace_shape=(64, 64))
    return cfg


def _no_pretrained(cfg):
    """``cfg`` without pretrained weights anywhere (Pretrained init_cfgs, ``pretrained=`` paths): no download."""
    if isinstance(cfg, dict):
        out = type(cfg)()
        for k, v in cfg.items():
            if isinstance(v, dict) and v.get('type') == 'Pretrained':
                v = None
            elif k == 'init_cfg' and isinstance(v, (list, tuple)):
                v = [c for c in v if not (isinstance(c, dict) and c.get('type') == 'Pretrained')] or None
            elif k == 'pretrained' and isinstance(v, str):
                v = None
            out[k] = _no_pretrained(v)
        return out
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_no_pretrained(v) for v in cfg)
    return cfg


@torch.no_grad()
def _build(cfg):
    model = revert_sync_batchnorm(build_detector(_no_pretrained(cfg)))  # SyncBN needs a process group
    # a module that creates its weight without initialising it (mmdet's TridentConv: torch.Tensor(shape),
    # left to init_weights, which the harness does not run: it is slow) would compute with whatever memory
    # held, NaN at times: such weights get Kaiming-normal here
    for m in model.modules():
        weight = m._parameters.get('weight')
        if weight is not None and weight.dim() > 1 and not hasattr(m, 'reset_parameters'):
            nn.init.kaiming_normal_(weight, mode='fan_out', nonlinearity='relu')
            if m._parameters.get('bias') is not None:
                m._parameters['bias'].zero_()
    return model


def _run_plain(model_cfg, data):
    """The same detector with its plain backbone, in this harness."""
    plain = Config(dict(model=model_cfg)).model
    plain.backbone.init_cfg = None
    loss_and_predict(_build(plain), data)


pytestmark = pytest.mark.usefixtures('one_thread')  # tiny networks: see conftest.py


def test_every_usual_family_sampled():
    families = {f for f, _, _ in _SELECTED}
    assert {'ResNet', 'ResNeXt', 'RegNet', 'HRNet', 'Res2Net', 'MobileNetV2', 'CSPDarknet'} <= families


@pytest.mark.parametrize('family,rel,model_cfg', _SELECTED, ids=[f'{f}:{r}' for f, r, _ in _SELECTED])
def test_zoo_config_with_pddr_backbone(family, rel, model_cfg):
    from mmdet.testing import demo_mm_inputs
    from mmengine.logging import MessageHub
    start = time.time()
    MessageHub.get_current_instance().update_info('iter', 0)  # as a runner does (YOLOX's batch resize reads it)
    torch.manual_seed(0)
    with_mask = 'mask' in repr(model_cfg).lower()  # instance masks only for models that use them
    data = demo_mm_inputs(batch_size=1, image_shapes=[(3, 64, 64)], num_items=[2], with_mask=with_mask)
    cfg = _wrapped(model_cfg)
    try:
        try:
            model = _build(cfg)
        except NothingConvertedError as e:
            reasons = sorted(set(e.report['plain'].values()))
            print(f'\n[zoo-pddr] {family} ({rel}): no conv + BN pair to convert ({e.report["num_bn"]} BNs; '
                  f'{reasons[:3]})')
            pytest.skip(f'{family}: no conv + BN pair to convert')
        report = model.backbone.pddr_report
        loss_and_predict(model, data)
    except Exception as e:  # noqa: B902  (re-raised unless the plain backbone fails the same way)
        if isinstance(e, pytest.skip.Exception):
            raise
        if fails_alike(e, lambda: _run_plain(model_cfg, data)):
            print(f'\n[zoo-pddr] skipped {rel}: fails the same way with the plain backbone here '
                  f'({type(e).__name__}: {str(e)[:120]})')
            pytest.skip(f'fails with the plain backbone too: {str(e)[:120]}')
        raise

    # fused == unfused: the features the backbone and neck compute, random BN statistics, in float64 (random
    # BN grows deep features to ~1e9, where float32 rounding alone reaches 5e-5 in HRNet; float64: 1e-13)
    randomize_bn(model, seed=3)
    model.eval()
    model.double()
    num = set_branches(model)
    inputs = model.data_preprocessor(data, False)['inputs'].double()
    with torch.no_grad():
        expected = model.extract_feat(inputs)
        assert pddr_mm.switch_to_deploy(model) == num == len(report['converted'])
        actual = model.extract_feat(inputs)
    err = max(max_rel_error(a, e) for a, e in zip(actual, expected))
    assert err <= TOL
    kinds = defaultdict(int)
    for kind in report['converted'].values():
        kinds[kind] += 1
    print(f'\n[zoo-pddr] {family} ({rel}, {model_cfg.type}): {num} PD-B layers ({dict(kinds)}), '
          f'{len(report["plain"])} plain; fused vs unfused {err:.1e}; {time.time() - start:.1f}s')
    assert all(not isinstance(m, PDConv2d) or m.deploy for m in model.modules())
