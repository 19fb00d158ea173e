# Dyn-Adapter with LoRA (rank 8 on the attention's qkv and proj) instead of the MLP adapter.
_base_ = './dyn-adapter_vit-b16_vtab-1k.py'

model = dict(adapter=dict(_delete_=True, type='LoRA', rank=8, alpha=8, targets=('qkv', 'proj')))
