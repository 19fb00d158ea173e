# The Dyn-Adapter study's transfer task on real images, in the VTAB-1k protocol (issue 31, item 5):
# Fashion-MNIST's classes 5-9 (sandal, shirt, sneaker, bag, ankle boot), 1,000 of their training images drawn
# once (seed 0) and split 800 train / 200 val (ClassSubset parts), top-1 on their 5,000 test images. The ViT
# was pretrained on classes 0-4 (../vit-tiny-p4_fashion-mnist-0-4.py), so no transfer image was seen before.
#   python tools/misc/get_fashion_mnist.py
# Status: built and tested (one iteration on fixture data); the study has not been run on the real set yet.
_base_ = ['mmpretrain::_base_/default_runtime.py', '../../_base_/datasets/fashion_mnist.py']
custom_imports = dict(imports=['pddr_mm'], allow_failed_imports=False)

num_classes = 5
classes = [5, 6, 7, 8, 9]
fmnist = dict(type='FashionMNIST', data_prefix='data/fashion_mnist', download=False)
vtab_draw = dict(type='ClassSubset', classes=classes, num_samples=1000, seed=0)  # the 1,000, drawn once
data_preprocessor = dict(num_classes=num_classes)
train_dataloader = dict(
    batch_size=32,
    dataset=dict(_delete_=True, **vtab_draw, part=(0, 800),
                 dataset=dict(**fmnist, test_mode=False, pipeline={{_base_.train_pipeline}})))
val_dataloader = dict(
    dataset=dict(_delete_=True, **vtab_draw, part=(800, 1000),
                 dataset=dict(**fmnist, test_mode=False, pipeline={{_base_.test_pipeline}})))
test_dataloader = dict(
    dataset=dict(_delete_=True, type='ClassSubset', classes=classes,
                 dataset=dict(**fmnist, split='test', test_mode=True, pipeline={{_base_.test_pipeline}})))
# the ViT of the pretraining config, frozen or fine-tuned from its checkpoint
pretrained = 'work_dirs/vit-tiny-p4_fashion-mnist-0-4/epoch_15.pth'  # its classifier checkpoint (backbone.* keys)
vit = dict(
    type='VisionTransformer',
    arch='deit-tiny',
    img_size=28,
    patch_size=4,
    in_channels=1,
    init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.'))

max_epochs = 30  # 25 iterations an epoch
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
    logger=dict(type='LoggerHook', interval=25),
    checkpoint=dict(type='CheckpointHook', interval=5, max_keep_ckpts=1))
randomness = dict(seed=0)
cpu_threads = 1
