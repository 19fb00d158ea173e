# Study baseline: the frozen ViT, no adapters, one linear head on its output.
_base_ = './adapter_vit-tiny-p4_shapes-cls-hard.py'

model = dict(adapter=None)
