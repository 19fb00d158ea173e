"""Training checkpoint -> deploy checkpoint + deploy config (``tools/model_converters/reparameterize.py``)."""
import os
import os.path as osp
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import load_checkpoint

from pddr_mm.ops import switch_to_deploy

from .configs import to_deploy_config
from .inputs import make_inputs
from .models import compare_outputs, tensor_forward, unfused_reference


def build_model(cfg: Config) -> nn.Module:
    """Build ``cfg.model`` in the config's default scope (mmdet / mmpretrain), without loading weights."""
    if not isinstance(cfg.get('model'), dict):
        raise ValueError(f'{cfg.filename or "the config"} has no model dict: pass a model config '
                         '(mmdet / mmpretrain style, with model=dict(type=...))')
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    return MODELS.build(cfg.model)


def load_model(cfg: Config, checkpoint: Optional[str] = None) -> nn.Module:
    """The model of ``cfg`` in eval mode, with ``checkpoint`` loaded strictly (a training checkpoint with the
    training config, or a deploy checkpoint with the deploy config that reparameterize.py wrote)."""
    if checkpoint and not osp.isfile(checkpoint):  # before building: a large model takes a while
        raise FileNotFoundError(f'checkpoint {checkpoint} does not exist')
    model = build_model(cfg)
    if checkpoint:
        try:
            load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
        except Exception as e:  # missing / unexpected keys, shapes, a training checkpoint in a deploy model, ...
            raise RuntimeError(f'checkpoint {checkpoint} does not fit the model of {cfg.filename or "the config"}: '
                               f'{e}') from e
    return model.eval()


def convert_checkpoint(cfg: Config,
                       checkpoint: str,
                       out_dir: str,
                       check_shape: Tuple[int, int] = (64, 64),
                       tolerance: float = 1e-3) -> Tuple[str, str, Dict]:
    """Fuse a training checkpoint; write ``<config>_deploy.py`` and ``<checkpoint>_deploy.pth`` to ``out_dir``.

    The fused weights are loaded strictly into a model built from the written deploy config, and its
    output on a generated batch of ``check_shape`` is compared against the unfused model's (branch by
    branch); a relative error above ``tolerance`` raises. The checkpoint's ``meta`` (dataset_meta ...)
    is kept; optimizer and scheduler states are dropped. Returns (config path, checkpoint path, info).
    """
    model = build_model(cfg)
    ckpt = load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    model.eval()
    reference = unfused_reference(model)
    num = switch_to_deploy(model)
    if num == 0:
        raise ValueError(f'{checkpoint}: the model of this config holds no trainable PDDR layer to fuse')

    deploy_cfg = to_deploy_config(cfg)
    deployed = build_model(deploy_cfg).eval()
    deployed.load_state_dict(model.state_dict(), strict=True)
    data = make_inputs(deployed, 2, check_shape)
    err = compare_outputs(tensor_forward(deployed, data), tensor_forward(reference, data))
    if not err <= tolerance:
        raise RuntimeError(f'fused model disagrees with the unfused one: max relative error {err:.3e} > {tolerance}')

    os.makedirs(out_dir, exist_ok=True)
    cfg_name = osp.splitext(osp.basename(cfg.filename or 'config.py'))[0]
    ckpt_name = osp.splitext(osp.basename(checkpoint))[0]
    cfg_path = osp.join(out_dir, f'{cfg_name}_deploy.py')
    ckpt_path = osp.join(out_dir, f'{ckpt_name}_deploy.pth')
    deploy_cfg.dump(cfg_path)
    meta = dict(ckpt.get('meta', {}) or {})
    meta['pddr_deploy'] = dict(source_checkpoint=osp.abspath(checkpoint), fused_layers=num, check_error=err)
    state = {k: v.detach().cpu() for k, v in deployed.state_dict().items()}
    torch.save(dict(meta=meta, state_dict=state), ckpt_path)
    return cfg_path, ckpt_path, dict(fused_layers=num, check_error=err)
