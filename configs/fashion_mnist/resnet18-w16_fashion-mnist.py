# The plain baseline of the Fashion-MNIST studies: the demo classifier's narrow ResNet-18 (stem and base width
# 16, widths 16-32-64-128) with one input channel, from scratch. The PDDR and RPG configs beside it change the
# backbone type only; everything else (data, schedule, seed) is this file.
#   python tools/misc/get_fashion_mnist.py
#   python tools/train.py configs/fashion_mnist/resnet18-w16_fashion-mnist.py
# Schedule: 2 epochs of 938 iterations (batch 64), one CPU thread: on an idle 2-core AMD EPYC 1.3 min an epoch
# (plain, this file; also each RPG ring), 4.3 (PD-A) and 4.7 (PD-B); plain reaches 86.1 ± 0.3% top-1 on the
# 10,000 test images (5 seeds; docs/benchmarks.md, Fashion-MNIST).
_base_ = ['mmpretrain::_base_/default_runtime.py', '../_base_/datasets/fashion_mnist.py']
custom_imports = dict(imports=['pddr_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ResNet',
        depth=18,
        in_channels=1,
        stem_channels=16,
        base_channels=16,
        strides=(1, 1, 2, 2),  # 28 px: the stem leaves 7x7, so keep the first two stages there
        out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=128,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, )))

max_epochs = 2
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)  # test set once, at the end
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min_ratio=0.05, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True),
]
auto_scale_lr = dict(base_batch_size=64)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=1))
randomness = dict(seed=0)
cpu_threads = 1  # one run per core: the studies run two side by side
