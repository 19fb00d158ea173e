"""Checkpoints of what was trained: the adapters and heads, not the frozen backbone.

With ``save_frozen=False`` (the default when the backbone has a ``Pretrained`` init_cfg) the model's
``state_dict`` leaves out every ``backbone.*`` tensor, so mmengine's ``CheckpointHook``, ``load_from`` and
``--resume`` work unchanged on small files. Loading such a state dict fills the backbone from its
init_cfg when it has not been initialised yet (``tools/test.py`` builds the model without calling
``init_weights``), and does not report the backbone keys as missing.
"""
import torch.nn as nn
from mmengine.logging import print_log

BACKBONE = 'backbone.'


def register_trainable_only_state_dict(model: nn.Module) -> None:
    model._backbone_from_init_cfg = False

    def drop_frozen(module, state_dict, prefix, local_metadata):
        if not module.save_frozen:
            for key in [k for k in state_dict if k.startswith(prefix + BACKBONE)]:
                del state_dict[key]
        return state_dict

    def fill_backbone(module, state_dict, prefix, *args):
        module._backbone_from_init_cfg = not any(k.startswith(prefix + BACKBONE) for k in state_dict)
        if not module._backbone_from_init_cfg:
            return
        if not module.backbone_is_pretrained:
            print_log('DynAdapterClassifier: the state dict has no backbone and the backbone has no Pretrained '
                      'init_cfg; it keeps its current weights', logger='current', level=30)
        elif not getattr(module.backbone, '_is_init', False):
            print_log('DynAdapterClassifier: the checkpoint holds the trained modules only; loading the frozen '
                      f'backbone from its init_cfg {module.backbone.init_cfg}', logger='current')
            module.backbone.init_weights()

    def hide_missing_backbone(module, incompatible_keys):
        if module._backbone_from_init_cfg:
            missing = incompatible_keys.missing_keys
            missing[:] = [k for k in missing if BACKBONE not in k]

    model._register_state_dict_hook(drop_frozen)
    model._register_load_state_dict_pre_hook(fill_backbone, with_module=True)
    model.register_load_state_dict_post_hook(hide_missing_backbone)
