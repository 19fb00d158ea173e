"""Tiny PDDR models, a generated dataset and configs for the deployment tests (CPU, seconds)."""
import importlib.util
import os.path as osp
from typing import Dict, Sequence

import torch
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from mmengine.registry import DATASETS, MODELS
from torch.utils.data import Dataset

import pddr_mm  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def load_tool(name: str):
    """Import tools/<name>.py (e.g. 'analysis_tools/benchmark') as a module: the tools are scripts."""
    spec = importlib.util.spec_from_file_location(f'pddr_tool_{name.replace("/", "_")}',
                                                  osp.join(ROOT, 'tools', f'{name}.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@MODELS.register_module(force=True)
class DeployTestNet(BaseModule):
    """Plain backbone: a stem, then 3x3 ConvModules (stride 2 each) whose convolution is set by ``conv_cfg``."""

    def __init__(self, channels: Sequence[int] = (8, 16), conv_cfg: Dict = None, init_cfg=None) -> None:
        super().__init__(init_cfg)
        # a plain stem: PDDR replaces the 3x3 convolutions after it (3 input channels do not split into groups)
        layers = [ConvModule(3, channels[0], 3, stride=2, padding=1, norm_cfg=dict(type='BN'))]
        cin = channels[0]
        for c in channels:
            layers.append(ConvModule(cin, c, 3, stride=2, padding=1, conv_cfg=conv_cfg, norm_cfg=dict(type='BN')))
            cin = c
        self.layers = torch.nn.Sequential(*layers)

    def forward(self, x):
        return (self.layers(x), )


@DATASETS.register_module(force=True)
class DeployTestDataset(Dataset):
    """Random 32x32 images with one of 3 labels, fixed by ``seed``."""
    metainfo = dict(classes=('a', 'b', 'c'))

    def __init__(self, num: int = 8, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (num, 3, 32, 32), generator=gen, dtype=torch.uint8)
        self.labels = torch.randint(0, 3, (num, ), generator=gen)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from mmpretrain.structures import DataSample
        return dict(inputs=self.images[i], data_samples=DataSample().set_gt_label(int(self.labels[i])))


def _loader(shuffle: bool, seed: int) -> Dict:
    return dict(batch_size=4, num_workers=0, dataset=dict(type='DeployTestDataset', num=8, seed=seed),
                sampler=dict(type='DefaultSampler', shuffle=shuffle), collate_fn=dict(type='pseudo_collate'))


CLS_CONFIG = f'''
custom_imports = dict(imports=['pddr_mm', 'deploy_fixtures'], allow_failed_imports=False)
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(type='ClsDataPreprocessor', mean=[127.5] * 3, std=[64.0] * 3, num_classes=3),
    backbone=dict(type='DeployTestNet', channels=(8, 16),
                  conv_cfg=dict(type='PDConv2d', mode='B', branch_groups=4, reduction=4)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=3, in_channels=16, loss=dict(type='CrossEntropyLoss')))
train_dataloader = {_loader(True, 0)!r}
val_dataloader = {_loader(False, 1)!r}
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator
train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1), logger=dict(type='LoggerHook', interval=1))
custom_hooks = [dict(type='PDDRDeployHook', fuse_val=True)]
log_level = 'WARNING'
'''

# RetinaNet from mmdet's base config, shrunk: ResNet-18 at 1/8 width, a PDConv2d (PD-B) head
DET_CONFIG = '''
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['pddr_mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(depth=18, base_channels=8, stem_channels=8, out_indices=(1, 2, 3), init_cfg=None),
    neck=dict(in_channels=[16, 32, 64], out_channels=16, start_level=0, num_outs=3, add_extra_convs=False),
    bbox_head=dict(num_classes=2, in_channels=16, feat_channels=16, stacked_convs=1,
                   conv_cfg=dict(type='PDConv2d', mode='B', branch_groups=4, reduction=4),
                   anchor_generator=dict(strides=[8, 16, 32])))
'''


def write_config(path: str, text: str) -> str:
    with open(path, 'w') as f:
        f.write(text)
    return path
