# Plain baseline of the demo: RetinaNet with a narrow ResNet-18 (base_channels=16: widths 16-32-64-128),
# trained from scratch on the synthetic shapes set (tools/misc/generate_shapes_dataset.py).
# retinanet_r18-pdb_shapes.py is the same model with PD-B convolutions in the backbone.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['pddr_mm'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        type='ResNet',
        depth=18,
        base_channels=16,
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_eval=False,  # from scratch: BN must learn its statistics
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 128], out_channels=64, start_level=0, add_extra_convs=False, num_outs=3),
    bbox_head=dict(
        num_classes=4,
        in_channels=64,
        feat_channels=64,
        stacked_convs=2,
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),  # trained from scratch: a normalised head
        # objects are 14-56 px: anchors of 16-80 px on strides 8-32
        anchor_generator=dict(octave_base_scale=2, scales_per_octave=3, strides=[8, 16, 32])),
    test_cfg=dict(nms_pre=300, max_per_img=50))

# ---------------------------------------------------------------- data
# The synthetic shapes set of tools/misc/generate_shapes_dataset.py in mmdet's CocoDataset, evaluated with
# CocoMetric (bbox mAP). 128x128 images, so no resizing; the loaders run in the main process (the
# images are tiny, and on a few CPU cores worker processes only compete with training for them).
dataset_type = 'CocoDataset'
data_root = 'data/shapes/'
classes = ('circle', 'square', 'triangle', 'cross')
metainfo = dict(classes=classes, palette=[(220, 20, 60), (0, 128, 255), (0, 200, 0), (255, 160, 0)])
backend_args = None
img_scale = (128, 128)

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),  # the generator's default size: a no-op there
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='images/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=0),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='images/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='CocoMetric', ann_file=data_root + 'annotations/instances_val.json', metric='bbox', format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator

# ---------------------------------------------------------------- schedule
# mmdet's 1x length, 12 epochs (1200 iterations of batch 8); retinanet_r18-pdb_shapes.py inherits it, so
# both models train on the same schedule. tools/run_demo.sh trains the two side by side, one thread each,
# to keep the whole demo within 15 minutes on 2 CPU cores (timings in docs/benchmarks.md); on a slower
# machine set max_epochs = 8 here (both follow). Validating every epoch gives the comparison plot its curves.
max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min_ratio=0.05, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True),
]
auto_scale_lr = dict(enable=False, base_batch_size=8)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2),
    visualization=dict(type='DetVisualizationHook', draw=False))
log_processor = dict(window_size=20)
randomness = dict(seed=0)
# torch threads per process on CPU (pddr_mm.utils.setup_runtime): this model's ops are too small to gain
# from splitting, and on a CPU shared with other work OpenMP threads waiting on each other made a training
# step several times slower with 2 threads than with 1
cpu_threads = 1
tta_model = None
