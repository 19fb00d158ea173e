# PD-A-ResNet-18 on ImageNet, trained from scratch with the seed's recipe (see the base config).
_base_ = './resnet18_8xb32_in1k.py'

model = dict(backbone=dict(type='PDResNet', mode='A'))
