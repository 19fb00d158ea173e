# Dyn-Adapter on the real-image transfer task: the ViT pretrained on Fashion-MNIST's classes 0-4 frozen,
# AdaptFormer adapters in its 12 blocks, balanced heads after blocks 3, 6, 9, 12, dynamic exit at 0.9.
#   python tools/train.py configs/dyn_adapter/dyn-adapter_vit-tiny-p4_fashion-mnist-5-9.py
#   python tools/analysis_tools/exit_sweep.py configs/dyn_adapter/dyn-adapter_vit-tiny-p4_fashion-mnist-5-9.py CKPT
# Status: built and tested; not yet run on the real set (issue 31, item 5).
_base_ = './_base_/fashion-mnist-5-9_vtab-1k.py'

model = dict(
    type='DynAdapterClassifier',
    backbone={{_base_.vit}},
    adapter=dict(type='Adapter', hidden_dim=8, scale=0.1),
    exit_every=3,
    head=dict(num_classes={{_base_.num_classes}}, balanced=True, max_hidden_layers=2),
    exit_threshold=0.9,
    sparsity=dict(drop_shallow=0.1, drop_deep=0., grad_mask=0.1))
custom_hooks = [dict(type='ExitLossWeightHook', min_end_weight=0.3, warmup_ratio=0.1)]
val_evaluator = [dict(type='Accuracy', topk=(1, )), dict(type='ExitMetric')]
test_evaluator = val_evaluator
