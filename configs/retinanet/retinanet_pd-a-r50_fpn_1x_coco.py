# RetinaNet with a PD-A ResNet-50 backbone (branches summed). The ImageNet init of the base
# (torchvision://resnet50) is kept: PDResNet maps the plain weights to an equivalent PD-A start.
_base_ = './retinanet_r50_fpn_1x_coco.py'

model = dict(backbone=dict(type='PDResNet', mode='A'))
