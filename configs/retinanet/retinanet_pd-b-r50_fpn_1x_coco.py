# RetinaNet with a PD-B ResNet-50 backbone (branches mixed per sample by the refinement module).
# The ImageNet init of the base (torchvision://resnet50) starts it function-preserving (plain_to_pd).
_base_ = './retinanet_r50_fpn_1x_coco.py'

model = dict(backbone=dict(type='PDResNet', mode='B'))
