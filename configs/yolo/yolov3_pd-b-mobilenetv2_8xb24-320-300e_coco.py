# YOLOv3 with a PD-B MobileNetV2 backbone: mmdet's YOLOv3-MobileNetV2 recipe unchanged, its backbone
# wrapped in PDDRBackbone (every conv + BN pair with a 3x3 or larger kernel becomes a PD-B PDConv2d).
# The base's ImageNet init (open-mmlab://mmdet/mobilenet_v2) starts it function-preserving: the plain
# conv + BN weights are mapped onto the PDDR layers when they load (plain_to_pd_layer).
_base_ = 'mmdet::yolo/yolov3_mobilenetv2_8xb24-320-300e_coco.py'

custom_imports = dict(imports=['pddr_mm'], allow_failed_imports=False)

model = dict(backbone=dict(_delete_=True, type='PDDRBackbone', backbone={{_base_.model.backbone}}, mode='B'))
