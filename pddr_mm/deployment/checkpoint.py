"""Training checkpoint -> deploy checkpoint + config, and for PD-A and RPG models the stock plain ones
(``tools/model_converters/reparameterize.py``)."""
import os
import os.path as osp
import re
import zipfile
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import CheckpointLoader
from mmengine.runner.checkpoint import load_state_dict

from pddr_mm.ops import switch_to_deploy

from .configs import is_deploy_cfg, to_deploy_config, to_plain_config
from .inputs import make_inputs
from .models import compare_outputs, deploy_kinds, tensor_forward, unfused_reference
from .plain import PlainMappingError, pd_b_layers, plain_state_dict


class ConversionError(RuntimeError):
    """A checkpoint or config the converter cannot use: unreadable, already fused, not fitting the model."""


def build_model(cfg: Config) -> nn.Module:
    """Build ``cfg.model`` in the config's default scope (mmdet / mmpretrain), without loading weights.

    (``mmdet.apis.init_detector`` / ``mmpretrain.apis.init_model`` load non-strictly and are per library.)
    """
    if not isinstance(cfg.get('model'), dict):
        raise ValueError(f'{cfg.filename or "the config"} has no model dict: pass a model config '
                         '(mmdet / mmpretrain style, with model=dict(type=...))')
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    return MODELS.build(cfg.model)


def read_checkpoint(path: str) -> Dict[str, Any]:
    """The checkpoint dict at ``path`` on the CPU; an error naming the file and what is wrong with it."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path} does not exist')
    size = osp.getsize(path)
    if size == 0:
        raise ConversionError(f'checkpoint {path} is empty (0 bytes): its writing or copy did not finish')
    try:
        ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    except Exception as e:
        if not zipfile.is_zipfile(path):
            with open(path, 'rb') as f:
                zip_start = f.read(4) == b'PK\x03\x04'
            what = (f'is truncated or corrupt ({size} bytes, its zip archive is incomplete): copy or download it again'
                    if zip_start else 'is not a PyTorch checkpoint (neither the zip archive torch.save writes nor a '
                    'pickle torch.load can read)')
        else:
            refused = re.search(r'Unsupported global: GLOBAL (\S+)', str(e))
            what = (f'holds a Python object ({refused.group(1)}) that torch.load\'s safe loader does not allow'
                    if refused else f'cannot be read by torch.load ({type(e).__name__})')
        raise ConversionError(f'checkpoint {path} {what}') from None
    if not isinstance(ckpt, dict):
        raise ConversionError(f'checkpoint {path} holds a {type(ckpt).__name__}, not a dict of weights')
    return ckpt


def state_dict_of(ckpt: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """The weights of a checkpoint dict (``state_dict``, or the dict itself), DDP's ``module.`` prefix dropped."""
    state = ckpt.get('state_dict', ckpt)
    return {re.sub(r'^module\.', '', k): v for k, v in state.items()}


def is_fused_checkpoint(ckpt: Dict[str, Any]) -> bool:
    """True for a checkpoint written in deploy form (by reparameterize.py, or saved after switch_to_deploy)."""
    keys = state_dict_of(ckpt)
    return 'pddr_deploy' in (ckpt.get('meta') or {}) or (any('.fused.' in k for k in keys)
                                                          and not any('.branches.' in k for k in keys))


def load_weights(model: nn.Module, ckpt: Dict[str, Any], checkpoint: str, cfg: Config) -> None:
    """Load a checkpoint dict into ``model`` strictly; ConversionError naming both files where it does not fit."""
    try:
        load_state_dict(model, state_dict_of(ckpt), strict=True)
    except Exception as e:  # missing / unexpected keys, shapes, a training checkpoint in a deploy model, ...
        raise ConversionError(f'checkpoint {checkpoint} does not fit the model of {cfg.filename or "the config"}: '
                              f'{e}') from e


def load_model(cfg: Config, checkpoint: Optional[str] = None) -> nn.Module:
    """The model of ``cfg`` in eval mode, with ``checkpoint`` loaded strictly (a training checkpoint with the
    training config, or a deploy checkpoint with the deploy config that reparameterize.py wrote)."""
    ckpt = read_checkpoint(checkpoint) if checkpoint else None  # before building: a large model takes a while
    model = build_model(cfg)
    if ckpt is not None:
        load_weights(model, ckpt, checkpoint, cfg)
    return model.eval()


def _check(actual: Any, expected: Any, tolerance: float, what: str) -> float:
    err = compare_outputs(actual, expected)
    if not err <= tolerance:  # also catches NaN
        raise RuntimeError(f'{what}: max relative error {err:.3e} > {tolerance}')
    return err


def _already_fused(cfg: Config, checkpoint: str) -> str:
    cfg_name = osp.splitext(osp.basename(cfg.filename or 'config.py'))[0]
    deploy_cfg = osp.join(osp.dirname(checkpoint) or '.', f'{cfg_name}_deploy.py')
    return (f'checkpoint {checkpoint} is already fused (deploy weights, no training branches): there is nothing to '
            f'fuse. Test it with its deploy config: python tools/test.py {deploy_cfg} {checkpoint}')


def _python(obj: Any) -> Any:
    """``obj`` with numpy values as Python ones, so stock mmengine loads the file with torch's safe loader."""
    if isinstance(obj, dict):
        return {k: _python(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_python(v) for v in obj)
    return obj.tolist() if hasattr(obj, 'tolist') and type(obj).__module__ == 'numpy' else obj


def _save(out_dir: str, cfg_path: str, ckpt_path: str, cfg: Config, model: nn.Module, meta: Dict) -> None:
    os.makedirs(out_dir, exist_ok=True)
    cfg.dump(cfg_path)
    torch.save(dict(meta=meta, state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()}), ckpt_path)


def convert_checkpoint(cfg: Config,
                       checkpoint: str,
                       out_dir: str,
                       check_shape: Tuple[int, int] = (64, 64),
                       tolerance: float = 1e-3,
                       plain: bool = True) -> Tuple[str, str, Dict]:
    """Fuse a training checkpoint; write ``<config>_deploy.py`` and ``<checkpoint>_deploy.pth`` to ``out_dir``.

    The fused weights are loaded strictly into a model built from the written deploy config, and its
    output on a generated batch of ``check_shape`` is compared against the unfused model's (branch by
    branch); a relative error above ``tolerance`` raises. The checkpoint's ``meta`` (dataset_meta ...)
    is kept; optimizer and scheduler states are dropped.

    With ``plain`` and every PDDR layer PD-A (an RPG model has none left: it deploys as the plain network), also
    ``<config>_plain.py`` and ``<checkpoint>_plain.pth``: the stock model (no pddr_mm) computing the same, checked
    against the fused one the same way. Returns
    (deploy config path, deploy checkpoint path, info); info holds ``plain_config``/``plain_checkpoint``, or
    ``plain_skipped`` (why not).
    """
    if is_deploy_cfg(cfg.model):
        raise ConversionError(f'{cfg.filename or "the config"} is already a deploy (fused) config: there is nothing '
                              f'to fuse. Test the deploy checkpoint with it: python tools/test.py {cfg.filename} '
                              'CHECKPOINT')
    deploy_cfg = to_deploy_config(cfg)  # before reading the checkpoint: a config with no PDDR module raises
    ckpt = read_checkpoint(checkpoint)
    if is_fused_checkpoint(ckpt):
        raise ConversionError(_already_fused(cfg, checkpoint))
    model = build_model(cfg)
    load_weights(model, ckpt, checkpoint, cfg)
    model.eval()
    reference = unfused_reference(model)
    kinds = deploy_kinds(model)
    num = switch_to_deploy(model)
    if num == 0:
        raise ConversionError(f'{checkpoint}: the model of this config holds no trainable PDDR or RPG layer to fuse')

    deployed = build_model(deploy_cfg).eval()
    deployed.load_state_dict(model.state_dict(), strict=True)
    data = make_inputs(deployed, 2, check_shape)
    fused_out = tensor_forward(deployed, data)
    err = _check(fused_out, tensor_forward(reference, data), tolerance,
                 'fused model disagrees with the unfused one')

    cfg_name = osp.splitext(osp.basename(cfg.filename or 'config.py'))[0]
    ckpt_name = osp.splitext(osp.basename(checkpoint))[0]
    cfg_path, ckpt_path = (osp.join(out_dir, f'{cfg_name}_deploy.py'), osp.join(out_dir, f'{ckpt_name}_deploy.pth'))
    meta = _python(dict(ckpt.get('meta', {}) or {}))
    source = dict(source_checkpoint=osp.abspath(checkpoint), fused_layers=num, check_error=err)
    _save(out_dir, cfg_path, ckpt_path, deploy_cfg, deployed, dict(meta, pddr_deploy=source))
    info = dict(fused_layers=num, kinds=kinds, check_error=err)
    if plain:
        pd_b = pd_b_layers(deployed)
        if pd_b:
            info['plain_skipped'] = (f'{len(pd_b)} PD-B layers (e.g. {pd_b[0]}) mix their kernels per sample, which '
                                     'no stock convolution does: only the deploy config runs them')
            return cfg_path, ckpt_path, info
        plain_cfg = to_plain_config(deploy_cfg)
        plain_model = build_model(plain_cfg).eval()
        try:
            plain_model.load_state_dict(plain_state_dict(deployed, plain_model), strict=True)
        except (PlainMappingError, RuntimeError) as e:  # the deploy files stand; say why there is no plain pair
            info['plain_skipped'] = f'the plain model of this config cannot take the fused weights: {e}'
            return cfg_path, ckpt_path, info
        info['plain_error'] = _check(tensor_forward(plain_model, data), fused_out, tolerance,
                                     'the plain model disagrees with the fused one')
        info['plain_config'] = osp.join(out_dir, f'{cfg_name}_plain.py')
        info['plain_checkpoint'] = osp.join(out_dir, f'{ckpt_name}_plain.pth')
        _save(out_dir, info['plain_config'], info['plain_checkpoint'], plain_cfg, plain_model,
              dict(meta, pddr_plain=dict(source, plain_error=info['plain_error'])))
    return cfg_path, ckpt_path, info
