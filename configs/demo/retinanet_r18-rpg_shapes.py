# The demo model with RPG: retinanet_r18-plain_shapes.py whose backbone convolutions (all but the stem)
# are generated from one ring of 1/4 of their kernel elements. Deploys as the plain model
# (tools/test.py --deploy, tools/model_converters/reparameterize.py writes the stock mmdet files).
_base_ = './retinanet_r18-plain_shapes.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='RPGBackbone',
        backbone={{_base_.model.backbone}},  # the plain demo's narrow ResNet-18, as it is
        ring_ratio=1 / 4,
        trace_shape=(128, 128)))
