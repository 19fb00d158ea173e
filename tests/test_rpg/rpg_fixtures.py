"""Tiny RPG backbones for the tests (CPU, a second or less each)."""
import torch
import torch.nn as nn

import pddr_mm  # noqa: F401  (registers RPGBackbone)
from pddr_mm.rpg import RPGBackbone, RPGConv2d

# mmdet's ResNet-18 at 1/8 width (8-16-32-64): 19 convolutions after the stem
RESNET = dict(type='mmdet.ResNet', depth=18, base_channels=8, stem_channels=8, out_indices=(1, 2, 3), init_cfg=None)


def rpg_resnet(seed: int = 0, torch_seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(torch_seed)
    if 'ring_size' not in kwargs:
        kwargs.setdefault('ring_ratio', 0.25)
    return RPGBackbone(dict(RESNET, **kwargs.pop('backbone', {})), seed=seed, trace_shape=(32, 32), **kwargs)


def rpg_layers(model: nn.Module):
    return {name: m for name, m in model.named_modules() if isinstance(m, RPGConv2d)}


def kernel_elements(model: nn.Module) -> int:
    return sum(m.index.numel() for m in rpg_layers(model).values())


# an mmpretrain classifier over a 1/8-width ResNet-18 with RPG
CLASSIFIER = '''
custom_imports = dict(imports=['pddr_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(type='ClsDataPreprocessor', mean=[127.5] * 3, std=[64.0] * 3, num_classes=3),
    backbone=dict(type='RPGBackbone', ring_ratio=0.25, trace_shape=(32, 32), permutation='PERMUTATION',
                  backbone=dict(type='ResNet', depth=18, base_channels=8, stem_channels=8)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=3, in_channels=64, loss=dict(type='CrossEntropyLoss')))
'''


def classifier_config(tmp_path, permutation: str = 'full') -> str:
    path = tmp_path / f'rpg_cls_{permutation}.py'
    path.write_text(CLASSIFIER.replace('PERMUTATION', permutation))
    return str(path)
