# Cascade R-CNN with a PD-B ResNet-50 backbone; ImageNet init (torchvision://resnet50) kept.
_base_ = './cascade-rcnn_r50_fpn_1x_coco.py'

model = dict(backbone=dict(type='PDResNet', mode='B'))
