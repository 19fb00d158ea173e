# Dyn-Adapter (Adapter = AdaptFormer's bottleneck, 8 dims) on a frozen ViT-B/16 for one VTAB-1k task.
# Give your pretrained ViT-B/16 (an mmpretrain classifier checkpoint, keys backbone.*; e.g. the
# ImageNet-21k one of mmpretrain's ViT model zoo) and the task:
#   python tools/train.py configs/dyn_adapter/dyn-adapter_vit-b16_vtab-1k.py --cfg-options \
#       model.backbone.init_cfg.checkpoint=checkpoints/vit-base-p16_in21k.pth \
#       train_dataloader.dataset.data_root=data/vtab-1k/dtd/ test_dataloader.dataset.data_root=data/vtab-1k/dtd/ \
#       val_dataloader.dataset.data_root=data/vtab-1k/dtd/ model.head.num_classes=47 data_preprocessor.num_classes=47
_base_ = './_base_/vtab-1k.py'

model = dict(
    type='DynAdapterClassifier',
    backbone=dict(
        type='VisionTransformer',
        arch='b',
        img_size=224,
        patch_size=16,
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/vit-base-p16_in21k.pth', prefix='backbone.')),
    adapter=dict(type='Adapter', hidden_dim=8, scale=0.1),
    exit_indices=(2, 5, 8, 11),
    head=dict(num_classes={{_base_.num_classes}}, balanced=True, max_hidden_layers=2, hidden_dims=192),
    exit_threshold=0.9,
    sparsity=dict(drop_shallow=0.1, drop_deep=0., grad_mask=0.1))
custom_hooks = [dict(type='ExitLossWeightHook', min_end_weight=0.3, warmup_ratio=0.1)]
