# The demo classifier: a narrow PD-B ResNet-18 (widths 16-32-64-128) in mmpretrain, trained from scratch
# on the 32x32 object crops that tools/misc/generate_shapes_dataset.py writes next to the detection set
# (data/shapes/cls/{train,val}/<class>/*.png, mmpretrain's folder format: ../_base_/datasets/shapes-cls.py).
#   python tools/train.py configs/demo/pd-b-resnet18_shapes-cls.py
#   python tools/test.py configs/demo/pd-b-resnet18_shapes-cls.py CKPT --deploy
_base_ = ['mmpretrain::_base_/default_runtime.py', '../_base_/datasets/shapes-cls.py']
custom_imports = dict(imports=['pddr_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='PDResNet',
        depth=18,
        base_channels=16,
        strides=(1, 1, 2, 2),  # 32 px crops: the stem leaves 8x8, so keep the first two stages there
        out_indices=(3, ),
        frozen_stages=-1,
        mode='B',
        branch_groups=8,  # divides every block width
        reduction=4),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=4,
        in_channels=128,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, )))

# ---------------------------------------------------------------- schedule: about a minute per epoch on 2 CPU cores
max_epochs = 6
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=2)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min_ratio=0.05, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True),
]
auto_scale_lr = dict(base_batch_size=32)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2))
randomness = dict(seed=0)
cpu_threads = 1  # see retinanet_r18-plain_shapes.py
