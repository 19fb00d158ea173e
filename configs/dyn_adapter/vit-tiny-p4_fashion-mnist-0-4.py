# Step 1 of the real-image Dyn-Adapter study (issue 31, item 5): a ViT of deit-tiny widths (192 dims, 12
# blocks, 3 heads) with 4x4 patches on the 28x28 grey images, trained from scratch on Fashion-MNIST's classes
# 0-4 (t-shirt, trouser, pullover, dress, coat: their 30,000 training images), checked on their 5,000 test
# images. Its checkpoint is the pretrained backbone the transfer configs (*_fashion-mnist-5-9.py) start from.
#   python tools/misc/get_fashion_mnist.py
#   python tools/train.py configs/dyn_adapter/vit-tiny-p4_fashion-mnist-0-4.py
# Status: built and tested (one iteration on fixture data); not yet trained on the real set. The size and
# the 15 epochs are a first choice, to be measured against the study's budget (about 45 minutes on 2 cores).
_base_ = ['mmpretrain::_base_/default_runtime.py', '../_base_/datasets/fashion_mnist.py']
custom_imports = dict(imports=['pddr_mm'], allow_failed_imports=False)

num_classes = 5
classes = [0, 1, 2, 3, 4]
fmnist = dict(type='FashionMNIST', data_prefix='data/fashion_mnist', download=False)
model = dict(
    type='ImageClassifier',
    backbone=dict(type='VisionTransformer', arch='deit-tiny', img_size=28, patch_size=4, in_channels=1,
                  drop_path_rate=0.1),
    neck=None,
    head=dict(type='VisionTransformerClsHead', num_classes=num_classes, in_channels=192,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
data_preprocessor = dict(num_classes=num_classes)
train_dataloader = dict(
    dataset=dict(_delete_=True, type='ClassSubset', classes=classes,
                 dataset=dict(**fmnist, test_mode=False, pipeline={{_base_.train_pipeline}})))
val_dataloader = dict(
    dataset=dict(_delete_=True, type='ClassSubset', classes=classes,
                 dataset=dict(**fmnist, split='test', test_mode=True, pipeline={{_base_.test_pipeline}})))
test_dataloader = val_dataloader

max_epochs = 15
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=5)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=5e-4, weight_decay=0.05), clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=200),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min_ratio=0.01, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2))
randomness = dict(seed=0)
cpu_threads = 2
