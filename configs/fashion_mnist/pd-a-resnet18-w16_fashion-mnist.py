# PD-A (summed branches) in the plain Fashion-MNIST ResNet-18's residual blocks; deploys as the plain network.
#   python tools/train.py configs/fashion_mnist/pd-a-resnet18-w16_fashion-mnist.py
_base_ = './pd-b-resnet18-w16_fashion-mnist.py'

model = dict(backbone=dict(mode='A'))
