# PD-B (per-sample mixed branches) in the plain Fashion-MNIST ResNet-18's residual blocks: only the backbone
# type changes, every ResNet argument is kept. The study config of the PDDR study (ablation.py derives plain,
# PD-A and PD-B annealed from it; docs/benchmarks.md).
#   python tools/train.py configs/fashion_mnist/pd-b-resnet18-w16_fashion-mnist.py
#   python tools/test.py configs/fashion_mnist/pd-b-resnet18-w16_fashion-mnist.py CKPT --deploy
_base_ = './resnet18-w16_fashion-mnist.py'

model = dict(backbone=dict(type='PDResNet', mode='B', branch_groups=8, reduction=4))  # 8 divides every width
