# Step 1 of the study (docs/dyn_adapter.md): a ViT of deit-tiny widths (192 dims, 12 blocks, 3 heads) on
# 32x32 crops with 4x4 patches, trained from scratch on the default generated crops (4 classes). Its
# checkpoint is the "pretrained" backbone the transfer configs freeze.
#   python tools/misc/generate_shapes_dataset.py --out data/shapes
#   python tools/train.py configs/dyn_adapter/vit-tiny-p4_shapes-cls.py
_base_ = './_base_/shapes-cls-hard_transfer.py'

num_classes = 4
data_root = 'data/shapes/cls/'
model = dict(
    type='ImageClassifier',
    backbone=dict(type='VisionTransformer', arch='deit-tiny', img_size=32, patch_size=4, drop_path_rate=0.1),
    neck=None,
    head=dict(type='VisionTransformerClsHead', num_classes=num_classes, in_channels=192,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
data_preprocessor = dict(num_classes=num_classes)
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

max_epochs = 60
train_cfg = dict(max_epochs=max_epochs, val_interval=5)
optim_wrapper = dict(optimizer=dict(lr=5e-4, weight_decay=0.05), clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min_ratio=0.01, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True),
]
