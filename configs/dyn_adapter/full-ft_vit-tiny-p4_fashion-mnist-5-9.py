# Study baseline on the real-image transfer task: full fine-tuning of the pretrained ViT (every parameter
# trains), mmpretrain's ImageClassifier with a linear head. Its checkpoints hold the whole model.
_base_ = './_base_/fashion-mnist-5-9_vtab-1k.py'

model = dict(
    type='ImageClassifier',
    backbone={{_base_.vit}},
    neck=None,
    head=dict(type='LinearClsHead', num_classes={{_base_.num_classes}}, in_channels=192,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
optim_wrapper = dict(optimizer=dict(lr=5e-4))  # lower than the adapters': every weight moves
