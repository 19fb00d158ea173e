"""Shared helpers for the model tests: building configs, tiny generated batches, one train step."""
import os
import re
import warnings
from typing import Callable, Dict

import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope
from torch import Tensor

import pddr_mm  # noqa: F401
from pddr_mm.ops import PDConv2d
from pddr_mm.utils import flatten_tensors

CONFIG_DIR = os.path.join(os.path.dirname(__file__), '..', '..', 'configs')


def load_cfg(path: str) -> Config:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return Config.fromfile(os.path.join(CONFIG_DIR, path) if not os.path.isabs(path) else path)


def build_detector(model_cfg: Dict):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    model_cfg = Config(dict(model=model_cfg)).model  # a copy
    model_cfg.backbone.init_cfg = None  # no download; the plain-start tests cover Pretrained
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(model_cfg)


def build_classifier(model_cfg: Dict, num_classes: int = 10):
    from mmpretrain.registry import MODELS
    from mmpretrain.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    model_cfg = Config(dict(model=model_cfg)).model
    if num_classes is not None:
        model_cfg.head.num_classes = num_classes
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(model_cfg)


def det_batch(size: int = 128, batch: int = 2, seed: int = 0) -> Dict:
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(seed)
    return demo_mm_inputs(batch_size=batch, image_shapes=[(3, size, size)] * batch, num_items=[3] * batch,
                          num_classes=80)


def cls_batch(size: int = 64, batch: int = 2, num_classes: int = 10, seed: int = 0) -> Dict:
    from mmpretrain.structures import DataSample
    gen = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8) for _ in range(batch)]
    samples = [DataSample().set_gt_label(i % num_classes) for i in range(batch)]
    return dict(inputs=inputs, data_samples=samples)


def train_step(model, data: Dict) -> Dict[str, Tensor]:
    """One real optimisation step (loss, backward, SGD step); returns the parsed losses."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    # clipped as mmdet's detector configs do: an untrained network with random weights can have a loss in the
    # hundreds, and one unclipped step can then leave it predicting nothing
    optim = OptimWrapper(torch.optim.SGD(params, lr=0.01, momentum=0.9), clip_grad=dict(max_norm=35, norm_type=2))
    log_vars = model.train_step(data, optim)
    assert torch.isfinite(log_vars['loss']), log_vars
    changed = sum(int(not torch.equal(b, p.detach())) for b, p in zip(before, params))
    assert changed > 0, 'the optimizer step changed no parameter'
    return log_vars


def set_branches(model) -> int:
    """Force the unfused (per-branch) computation everywhere: the reference for fusion tests."""
    layers = [m for m in model.modules() if isinstance(m, PDConv2d)]
    for m in layers:
        m.forward_path = 'branches'
    return len(layers)


flatten = flatten_tensors  # the tests' name for it


_BASE = re.compile(r'''['"]([^'"]+\.py)['"]''')


def chain_text(path: str, seen=None) -> str:
    """A config's text, then the texts of the files it inherits from (so the first match is its own): a
    cheap pre-filter over the config zoo before parsing."""
    seen = set() if seen is None else seen
    if path in seen or not os.path.isfile(path):
        return ''
    seen.add(path)
    with open(path) as f:
        text = f.read()
    bases = [os.path.normpath(os.path.join(os.path.dirname(path), b)) for b in _BASE.findall(text)]
    return text + ''.join(chain_text(b, seen) for b in bases)


def loss_and_predict(model, data: Dict) -> None:
    """One loss with backward (train mode) and one prediction step (eval mode), as a smoke test."""
    model.train()
    loss, _ = model.parse_losses(model(**model.data_preprocessor(data, True), mode='loss'))
    assert torch.isfinite(loss)
    loss.backward()
    model.eval()
    with torch.no_grad():
        assert len(model.test_step(data)) == 1


def fails_alike(error: Exception, run_plain: Callable[[], None]) -> bool:
    """Whether ``run_plain()`` (the same model with its plain backbone) raises as ``error`` did: same type and
    same first 80 characters. Then the failure is this harness's (a GPU-only op, a missing file), not PDDR's."""
    try:
        run_plain()
    except Exception as e:  # noqa: B902  (compared here)
        return type(e) is type(error) and str(e)[:80] == str(error)[:80]
    return False
