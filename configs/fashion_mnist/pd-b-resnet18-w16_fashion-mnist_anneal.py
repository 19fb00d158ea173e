# PD-B with the refinement softmax temperature annealed from 30 to 1 over the first of the 2 epochs
# (PDDRTemperatureHook, as DyConv; what ablation.py's pd-b-anneal preset adds).
#   python tools/train.py configs/fashion_mnist/pd-b-resnet18-w16_fashion-mnist_anneal.py
_base_ = './pd-b-resnet18-w16_fashion-mnist.py'

custom_hooks = [dict(type='PDDRTemperatureHook', start=30.0, end=None, epochs=1)]
