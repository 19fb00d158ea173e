# The demo PD-B classifier with the refinement softmax temperature annealed (PDDRTemperatureHook):
# 30 -> the configured temperature (1 by default) linearly over the first 2 of the 6 epochs, as DyConv does
# over its first epochs. Near-uniform branch weights at the start let every branch learn while the
# refinement module is still random. Validation runs at the configured temperature (what deploys).
#   python tools/train.py configs/demo/pd-b-resnet18_shapes-cls_anneal.py
_base_ = './pd-b-resnet18_shapes-cls.py'

custom_hooks = [dict(type='PDDRTemperatureHook', start=30.0, end=None, epochs=2)]
