# Study baseline on the real-image transfer task: the frozen ViT and the same adapters, one linear head after
# the last block (plain AdaptFormer-style PETL: no early exit, no sparsity, no loss-weight schedule).
_base_ = './dyn-adapter_vit-tiny-p4_fashion-mnist-5-9.py'

model = dict(exit_every=None, exit_indices=(11, ), head=dict(balanced=False), exit_threshold=None, sparsity=None)
custom_hooks = []
