# Plain ResNet-50 on ImageNet with the seed's recipe (the PyTorch ImageNet example, which the seed
# follows): 8 GPUs x 32 images, SGD lr 0.1, momentum 0.9, weight decay 1e-4, 90 epochs, lr x0.1 at
# epochs 30 and 60. Model, data pipeline (RandomResizedCrop 224 + flip; resize 256 + centre crop 224)
# and runtime come from mmpretrain's config, which already match the seed; the seed-specific parts
# are the epoch count and the milestones below (mmpretrain's base: 100 epochs, [30, 60, 90]).
_base_ = 'mmpretrain::resnet/resnet50_8xb32_in1k.py'

custom_imports = dict(imports=['pddr_mm'], allow_failed_imports=False)

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))  # seed
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[30, 60], gamma=0.1)  # seed
train_cfg = dict(by_epoch=True, max_epochs=90, val_interval=1)  # seed
