# RPG ResNet-34 on ImageNet with the authors' ring of 11,160,576 entries (about ResNet-18's block
# convolutions) for its T = 21,258,240 kernel elements (every convolution except the stem; T/N = 1.90):
# a deeper network with about ResNet-18's degrees of freedom. Recipe as ./rpg-resnet18_8xb32_in1k.py
# (mmpretrain's ResNet-18 and ResNet-34 configs differ only in the depth).
_base_ = './rpg-resnet18_8xb32_in1k.py'

model = dict(backbone=dict(backbone=dict(depth=34), ring_ratio=None, ring_size=11160576))
