# RPG ResNet-18 with a ring of 1/8 of its generated kernel elements (N = T / 8 = 1,394,688): 1.93M
# trainable parameters with the stem, BNs and classifier, against the plain network's 11.69M.
_base_ = './rpg-resnet18_8xb32_in1k.py'

model = dict(backbone=dict(ring_ratio=1 / 8))
