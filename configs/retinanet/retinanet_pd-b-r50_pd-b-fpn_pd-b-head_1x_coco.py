# RetinaNet with PD-B everywhere: backbone 3x3 convs, FPN output convs (extra conv included) and the
# cls/reg tower convs of the head. Lateral 1x1 convs and the final predictors stay plain.
_base_ = './retinanet_pd-b-r50_fpn_1x_coco.py'

model = dict(
    neck=dict(type='PDFPN', mode='B'),
    bbox_head=dict(type='PDRetinaHead', mode='B'))
