# Data and schedule of the study's transfer task (docs/dyn_adapter.md): the hard generated crops,
# 8 classes, 32x32, mmpretrain's folder format (../../_base_/datasets/shapes-cls-hard.py), and the ViT.
#   python tools/misc/generate_shapes_dataset.py --hard --out data/shapes_hard
_base_ = ['mmpretrain::_base_/default_runtime.py', '../../_base_/datasets/shapes-cls-hard.py']
custom_imports = dict(imports=['pddr_mm'], allow_failed_imports=False)

num_classes = 8
# grey crops, each standardised on its own: colour and contrast carry no class in the generated crops, and the
# ViT trained from scratch on colour inputs with a fixed mean/std stays at chance (docs/benchmarks.md)
data_preprocessor = dict(num_classes=num_classes, mean=None, std=None, to_rgb=False)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomGrayscale', prob=1.0, keep_channels=True),
    dict(type='PerImageStandardize'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomGrayscale', prob=1.0, keep_channels=True),
    dict(type='PerImageStandardize'),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=128, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
# the ViT of deit-tiny widths the study pretrains (../vit-tiny-p4_shapes-cls.py), loaded from its checkpoint
pretrained = 'work_dirs/vit-tiny-p4_shapes-cls/epoch_60.pth'  # step 1's classifier checkpoint (backbone.* keys)
vit = dict(
    type='VisionTransformer',
    arch='deit-tiny',
    img_size=32,
    patch_size=4,
    init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.'))

max_epochs = 10
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min_ratio=0.05, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2))
randomness = dict(seed=0)
cpu_threads = 2
