"""mmdet's config zoo with the backbone swapped: every shipped config whose backbone is a ResNet-50 and
whose neck is an FPN builds with ``type='PDResNet'`` (all other backbone arguments kept, no
pretrained init), runs one loss and one prediction step on a tiny generated input, and fuses exactly:
with random BN statistics, the fused model's tensor-mode outputs equal the unfused (branch by branch) ones.

Configs giving identical model dicts are run once (161 distinct models in mmdet 3.3). By default
every one runs; for quick local runs ``PDDR_ZOO=types`` runs one model per (detector type, dcn or not,
plugins or not) and ``PDDR_ZOO=core`` one each of RetinaNet, Faster/Mask/Cascade R-CNN, FCOS, ATSS,
GFL plus the first dcn and plugin configs. dcn requests and norms that cannot be folded (GN) must be
refused by PDResNet with a ValueError. A config is skipped only where the same model with the plain
ResNet backbone fails here in exactly the same way (a GPU-only op, a package or file it needs): the
plain model is run to decide, and the reason is printed.
"""
import glob
import os
import time
import warnings

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm

import pddr_mm  # noqa: F401
from _helpers import build_detector, chain_text, fails_alike, flatten, loss_and_predict, set_branches
from pddr_mm.ops import PDConv2d, switch_to_deploy
from random_bn import max_rel_error, randomize_bn

# the suite runs every distinct model (PDDR_ZOO=full, the default); for quick local runs PDDR_ZOO=types
# runs one model per (detector type, dcn, plugins) and PDDR_ZOO=core the detectors named in the task
# plus a plugin backbone and a dcn request
ZOO = os.environ.get('PDDR_ZOO', 'full')
FULL = ZOO == 'full'
CORE_TYPES = ('RetinaNet', 'FasterRCNN', 'MaskRCNN', 'CascadeRCNN', 'FCOS', 'ATSS', 'GFL')
PER_TYPE = FULL or ZOO == 'types'
FOLDABLE_NORMS = ('BN', 'BN2d', 'SyncBN')
FUSE_TOL = 1e-5


def _zoo_models():
    import mmdet
    root = os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'configs')
    exact, coarse = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for path in sorted(glob.glob(os.path.join(root, '**', '*.py'), recursive=True)):
            if f'{os.sep}_base_{os.sep}' in path:
                continue
            text = chain_text(path)
            if 'FPN' not in text or 'ResNet' not in text:  # cannot hold a ResNet + FPN model
                continue
            if not FULL and 'r50' not in os.path.basename(path) and 'depth=50' not in text[:text.find('\n_base_') + 1]:
                continue  # mmdet names ResNet-50 configs '*r50*'; parsing all 800 configs costs a minute
            try:
                model = Config.fromfile(path).get('model')
            except Exception as e:  # a config that needs something absent here (dataset lib, ...)
                print(f'[zoo] cannot parse {os.path.relpath(path, root)}: {type(e).__name__}')
                continue
            if not isinstance(model, dict):
                continue
            backbone, neck = model.get('backbone'), model.get('neck')
            if not (isinstance(backbone, dict) and backbone.get('type') == 'ResNet' and backbone.get('depth') == 50
                    and isinstance(neck, dict) and neck.get('type') == 'FPN'):
                continue
            model.backbone.type = 'PDResNet'
            model.backbone.init_cfg = None
            rel = os.path.relpath(path, root)
            exact.setdefault(repr(model), (rel, model))
            kind = (model.type, model.backbone.get('dcn') is not None, bool(model.backbone.get('plugins')))
            coarse.setdefault(repr(kind), (rel, model))
    return exact, coarse


_EXACT, _COARSE = _zoo_models()
_SELECTED = list((_EXACT if FULL else _COARSE).values())
if not PER_TYPE:
    _core, _seen = [], set()
    for _rel, _m in _SELECTED:
        _key = (_m.type, _m.backbone.get('dcn') is not None, bool(_m.backbone.get('plugins')))
        _extra = _key[1] or _key[2]  # the first dcn and the first plugin model, whatever the detector
        if (_m.type in CORE_TYPES and not _extra) or (_extra and _key[1:] not in _seen):
            _core.append((_rel, _m))
            _seen.add(_key[1:])
    _SELECTED = _core
print(f'[zoo] {len(_EXACT)} distinct ResNet-50 + FPN model dicts; running {len(_SELECTED)}')


def test_zoo_found_the_usual_detectors():
    types = {m.type for _, m in _EXACT.values()}
    assert {'RetinaNet', 'FasterRCNN', 'MaskRCNN', 'CascadeRCNN', 'FCOS', 'ATSS', 'GFL'} <= types
    # whatever the selection mode, every core detector type is among those that run
    assert set(CORE_TYPES) <= {m.type for _, m in _SELECTED}


def _fused_error(model, data) -> float:
    """max relative error of the fused model's features (backbone + neck, where the PDDR layers are) against
    the unfused ones. Not the heads' outputs: a two-stage detector picks its proposals by rank, so a
    difference in the last float bit can pick another box there."""
    randomize_bn(model, seed=1)
    model.eval()
    assert set_branches(model) > 0
    with torch.no_grad():
        batch = model.data_preprocessor(data, False)
        expected = flatten(model.extract_feat(batch['inputs']))
        assert switch_to_deploy(model) > 0
        actual = flatten(model.extract_feat(batch['inputs']))
    assert len(actual) == len(expected) > 0
    return max(max_rel_error(a, e) for a, e in zip(actual, expected))


def _run_plain(model_cfg, data):
    """The same model with the plain ResNet backbone, on the same input."""
    plain_cfg = Config(dict(model=model_cfg)).model
    plain_cfg.backbone.type = 'ResNet'
    loss_and_predict(revert_sync_batchnorm(build_detector(plain_cfg)), data)


@pytest.mark.parametrize('rel,model_cfg', _SELECTED, ids=[r for r, _ in _SELECTED])
def test_zoo_config_with_pd_backbone(rel, model_cfg):
    start = time.time()
    if model_cfg.backbone.get('dcn') is not None:
        with pytest.raises(ValueError, match='dcn'):
            build_detector(model_cfg)
        print(f'\n[zoo] {rel}: PDResNet refuses dcn (ValueError raised, as intended)')
        return
    norm_type = (model_cfg.backbone.get('norm_cfg') or {}).get('type', 'BN')
    if norm_type not in FOLDABLE_NORMS:
        with pytest.raises(ValueError, match='norm_cfg'):
            build_detector(model_cfg)
        print(f'\n[zoo] {rel}: PDResNet refuses norm_cfg {norm_type} (cannot be folded; ValueError, as intended)')
        return
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(0)  # masks too: box-only detectors ignore them, instance/panoptic ones need them
    data = demo_mm_inputs(batch_size=1, image_shapes=[(3, 64, 64)], num_items=[2], with_mask=True)
    try:
        model = revert_sync_batchnorm(build_detector(model_cfg))  # SyncBN needs a process group; BN on CPU
        assert any(isinstance(m, PDConv2d) for m in model.backbone.modules())
        loss_and_predict(model, data)
    except Exception as e:  # noqa: B902  (re-raised unless the plain backbone fails the same way)
        if fails_alike(e, lambda: _run_plain(model_cfg, data)):
            print(f'\n[zoo] skipped {rel}: fails the same way with the plain ResNet backbone here, so not a '
                  f'PDDR problem ({type(e).__name__}: {str(e)[:120]})')
            pytest.skip(f'fails with the plain backbone too: {str(e)[:120]}')
        raise
    err = _fused_error(model, data)
    assert err <= FUSE_TOL, err
    print(f'\n[zoo] ran {rel} ({model_cfg.type}) in {time.time() - start:.1f}s, fused vs unfused {err:.1e}')
