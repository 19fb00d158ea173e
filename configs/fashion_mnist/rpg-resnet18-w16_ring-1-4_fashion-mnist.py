# RPG: every convolution of the plain Fashion-MNIST ResNet-18 but the stem generated from one model ring of
# 1/4 of their kernel elements (cache-friendly block permutation). The RPG study varies ring_ratio and
# compares with plain networks narrowed to the same trainable parameters (docs/benchmarks.md).
#   python tools/train.py configs/fashion_mnist/rpg-resnet18-w16_ring-1-4_fashion-mnist.py
_base_ = './resnet18-w16_fashion-mnist.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='RPGBackbone',
        backbone={{_base_.model.backbone}},
        ring_ratio=1 / 4,
        permutation='block',
        trace_shape=(28, 28)))
