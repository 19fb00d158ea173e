# RPG ResNet-34 on ImageNet with the authors' ring of 11,160,576 entries (about ResNet-18's block
# convolutions) for its T = 21,258,240 kernel elements (every convolution except the stem; T/N = 1.90):
# a deeper network with about ResNet-18's degrees of freedom. Recipe as ../resnet/resnet18_8xb32_in1k.py.
_base_ = 'mmpretrain::resnet/resnet34_8xb32_in1k.py'

custom_imports = dict(imports=['pddr_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='RPGBackbone',
        backbone=dict(type='ResNet', depth=34, num_stages=4, out_indices=(3, ), style='pytorch'),
        ring_size=11160576,
        rings='global',
        permutation='full',
        seed=0))

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))  # seed
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[30, 60], gamma=0.1)  # seed
train_cfg = dict(by_epoch=True, max_epochs=90, val_interval=1)  # seed
