# PD-A-ResNet-18 on ImageNet, trained from scratch with the seed's recipe (see the base config).
# PDResNet is mmdet's ResNet class: it defaults to norm_eval=True (frozen BN, for detection), which
# must be off when training a classifier.
_base_ = './resnet18_8xb32_in1k.py'

model = dict(backbone=dict(type='PDResNet', mode='A', norm_eval=False))
