# Study baseline on the real-image transfer task: the frozen ViT, no adapters, one linear head on its output.
_base_ = './adapter_vit-tiny-p4_fashion-mnist-5-9.py'

model = dict(adapter=None)
