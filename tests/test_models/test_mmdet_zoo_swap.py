"""mmdet's config zoo with the backbone swapped: every shipped config whose backbone is a ResNet-50 and
whose neck is an FPN builds with ``type='PDResNet'`` (all other backbone arguments kept, no
pretrained init) and runs one loss and one prediction step on a tiny generated input.

Configs giving identical model dicts are run once. By default one model per (detector type, backbone
arguments, neck) is run, to fit the suite's time budget; ``PDDR_ZOO_FULL=1`` runs every distinct
model dict. A config that cannot run here is skipped with its reason printed; dcn requests must be
refused by PDResNet with a ValueError.
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
from _helpers import build_detector, det_batch
from pddr_mm.ops import PDConv2d

FULL = os.environ.get('PDDR_ZOO_FULL', '0') == '1'
GPU_ONLY = ('cuda', 'not implemented for', 'not compiled with gpu')


def _zoo_models():
    import mmdet
    root = os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'configs')
    exact, coarse = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for path in sorted(glob.glob(os.path.join(root, '**', '*.py'), recursive=True)):
            if f'{os.sep}_base_{os.sep}' in path:
                continue
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
            coarse.setdefault(repr((model.type, model.backbone, model.neck)), (rel, model))
    return exact, coarse


_EXACT, _COARSE = _zoo_models()
_SELECTED = list((_EXACT if FULL else _COARSE).values())
print(f'[zoo] {len(_EXACT)} distinct ResNet-50 + FPN model dicts; running {len(_SELECTED)}')


def test_zoo_found_the_usual_detectors():
    types = {m.type for _, m in _EXACT.values()}
    assert {'RetinaNet', 'FasterRCNN', 'MaskRCNN', 'CascadeRCNN', 'FCOS', 'ATSS', 'GFL'} <= types
    assert len(_SELECTED) >= len(types)


@pytest.mark.parametrize('rel,model_cfg', _SELECTED, ids=[r for r, _ in _SELECTED])
def test_zoo_config_with_pd_backbone(rel, model_cfg):
    start = time.time()
    if model_cfg.backbone.get('dcn') is not None:
        with pytest.raises(ValueError, match='dcn'):
            build_detector(model_cfg)
        print(f'\n[zoo] skipped {rel}: PDResNet refuses dcn (ValueError raised, as intended)')
        return
    model = revert_sync_batchnorm(build_detector(model_cfg))  # SyncBN needs a process group; BN on CPU
    assert any(isinstance(m, PDConv2d) for m in model.backbone.modules())
    with_mask = 'mask' in rel or 'Mask' in model_cfg.type
    data = det_batch(size=64, batch=1)
    if with_mask:
        from mmdet.testing import demo_mm_inputs
        torch.manual_seed(0)
        data = demo_mm_inputs(batch_size=1, image_shapes=[(3, 64, 64)], num_items=[2], with_mask=True)
    try:
        model.train()
        losses = model.loss(**model.data_preprocessor(data, True))
        loss = sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v) for k, v in losses.items()
                   if 'loss' in k)
        assert torch.isfinite(loss)
        loss.backward()
        model.eval()
        with torch.no_grad():
            preds = model.test_step(data)
        assert len(preds) == 1
    except (RuntimeError, NotImplementedError, KeyError, AttributeError) as e:
        msg = str(e).lower()
        if any(s in msg for s in GPU_ONLY):
            print(f'\n[zoo] skipped {rel}: needs a GPU-only op ({type(e).__name__}: {str(e)[:120]})')
            pytest.skip(f'GPU-only op: {str(e)[:120]}')
        raise
    print(f'\n[zoo] ran {rel} ({model_cfg.type}) in {time.time() - start:.1f}s')
