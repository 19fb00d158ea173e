"""Checkpoints of what was trained: the adapters and heads, not the frozen backbone.

With ``save_frozen=False`` (the default when the backbone has a ``Pretrained`` init_cfg) the model's
``state_dict`` leaves out the frozen backbone tensors (its parameters with ``requires_grad=False`` and its
buffers), so mmengine's ``CheckpointHook``, ``load_from`` and ``--resume`` work unchanged on small files.
Loading a state dict without them first fills the backbone from its init_cfg when it has not been
initialised yet (``tools/test.py`` builds the model without calling ``init_weights``), then loads what the
state dict holds on top, and does not report the frozen keys as missing.
"""
from typing import List

import torch.nn as nn
from mmengine.logging import print_log


def frozen_backbone_keys(model: nn.Module, prefix: str = '') -> List[str]:
    backbone = model.backbone
    keys = [n for n, p in backbone.named_parameters() if not p.requires_grad]
    keys += [n for n, _ in backbone.named_buffers()]
    return [f'{prefix}backbone.{n}' for n in keys]


def register_trainable_only_state_dict(model: nn.Module) -> None:
    model._frozen_from_init_cfg = []

    def drop_frozen(module, state_dict, prefix, local_metadata):
        if not module.save_frozen:
            for key in frozen_backbone_keys(module, prefix):
                state_dict.pop(key, None)
        return state_dict

    def fill_backbone(module, state_dict, prefix, *args):
        missing = [k for k in frozen_backbone_keys(module, prefix) if k not in state_dict]
        module._frozen_from_init_cfg = missing
        if not missing:
            return
        if not module.backbone_is_pretrained:
            print_log(f'DynAdapterClassifier: the state dict lacks {len(missing)} frozen backbone tensors and the '
                      'backbone has no Pretrained init_cfg; they keep their current values', logger='current',
                      level=30)
        elif not getattr(module.backbone, '_is_init', False):
            print_log('DynAdapterClassifier: the checkpoint holds the trained modules only; loading the frozen '
                      f'backbone from its init_cfg {module.backbone.init_cfg}', logger='current')
            module.backbone.init_weights()

    def hide_missing_frozen(module, incompatible_keys):
        expected = set(module._frozen_from_init_cfg)
        if expected:
            missing = incompatible_keys.missing_keys
            missing[:] = [k for k in missing if k not in expected]

    model._register_state_dict_hook(drop_frozen)
    model._register_load_state_dict_pre_hook(fill_backbone, with_module=True)
    model.register_load_state_dict_post_hook(hide_missing_frozen)
