# A lightweight vision transformer with PDDR, small enough for a CPU: mmpretrain's MobileViT-XXS whose
# conv + BN pairs (3x3 and larger, depthwise included) train as PD-B layers (PDDRBackbone), on the
# generated 32x32 crops with the demo classifier's data and schedule.
#   python tools/train.py configs/demo/pd-b-mobilevit-xxs_shapes-cls.py
#   python tools/test.py configs/demo/pd-b-mobilevit-xxs_shapes-cls.py CKPT --deploy
_base_ = './pd-b-resnet18_shapes-cls.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='PDDRBackbone',
        backbone=dict(type='MobileViT', arch='xx_small'),
        mode='B',
        branch_groups=4,  # divides every converted layer's width that is not depthwise
        reduction=4,
        trace_shape=(32, 32)),
    head=dict(in_channels=320))
