# Study baseline: full fine-tuning of the same pretrained ViT (every parameter trains), mmpretrain's
# ImageClassifier with a linear head. Its checkpoints hold the whole model.
_base_ = './_base_/shapes-cls-hard_transfer.py'

pretrained = 'work_dirs/vit-tiny-p4_shapes-cls/epoch_30.pth'
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VisionTransformer',
        arch='deit-tiny',
        img_size=32,
        patch_size=4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=None,
    head=dict(type='LinearClsHead', num_classes={{_base_.num_classes}}, in_channels=192,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
optim_wrapper = dict(optimizer=dict(lr=5e-4))  # lower than the adapters': every weight moves
