# Study baseline on the real-image transfer task: the frozen ViT with LoRA (rank 8) on the attention's qkv and
# output projections instead of adapters, one head after the last block.
_base_ = './adapter_vit-tiny-p4_fashion-mnist-5-9.py'

model = dict(adapter=dict(_delete_=True, type='LoRA', rank=8, alpha=8, targets=('qkv', 'proj')))
