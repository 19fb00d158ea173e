# A VTAB-1k task in the layout most PETL code uses (NOAH, RepAdapter): one folder per task holding the
# images and two lists of "relative/path.jpg label" lines, train800val200.txt (the 1000 training images)
# and test.txt:
#   data/vtab-1k/<task>/{train800val200.txt,test.txt,images/...}
# Give the task folder (data_root of the three loaders) and num_classes (model.head, data_preprocessor)
# with --cfg-options or in a child config. Common PETL practice on VTAB-1k
# (not a claim of the Dyn-Adapter paper): 224x224 resize, no augmentation, AdamW, 100 epochs, batch 64.
_base_ = 'mmpretrain::_base_/default_runtime.py'
custom_imports = dict(imports=['pddr_mm'], allow_failed_imports=False)

num_classes = 100  # cifar100 of VTAB-1k
data_root = 'data/vtab-1k/cifar/'
dataset_type = 'CustomDataset'
data_preprocessor = dict(
    num_classes=num_classes, mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(224, 224), interpolation='bicubic'),
    dict(type='PackInputs'),
]
test_pipeline = train_pipeline
train_dataloader = dict(
    batch_size=64,
    num_workers=4,
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='train800val200.txt', data_prefix='',
                 with_label=True, pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=128,
    num_workers=4,
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='test.txt', data_prefix='', with_label=True,
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
val_evaluator = [dict(type='Accuracy', topk=(1, )), dict(type='ExitMetric')]
test_evaluator = val_evaluator

max_epochs = 100
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=10)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=10, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 10, eta_min=1e-6, by_epoch=True, begin=10, end=max_epochs,
         convert_to_iter_based=True),
]
auto_scale_lr = dict(base_batch_size=64)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=1))
