# Fashion-MNIST (Zalando; 60,000 training / 10,000 test images, 28x28 grey, 10 classes), read by mmpretrain's
# own FashionMNIST dataset from the four unpacked idx files that this command puts in data/fashion_mnist/:
#   python tools/misc/get_fashion_mnist.py
# The dataset picks its files by test_mode, not by split: test_mode=True is what makes the val/test loaders
# read the 10,000 test images (split='test' alone would silently give the training set; with test_mode it only
# keeps mmpretrain from warning that test_mode reads the training split).
# No validation split: evaluation is on the official test set, once, at the end of training.
dataset_type = 'FashionMNIST'
data_root = 'data/fashion_mnist'
# One channel; mean and std of the 60,000 training images (0-255 scale).
data_preprocessor = dict(num_classes=10, mean=[72.94], std=[90.02], to_rgb=False)
# the augmentation of the benchmark's submitted results: padded random crop and horizontal flip
train_pipeline = [
    dict(type='RandomCrop', crop_size=28, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(type=dataset_type, data_prefix=data_root, test_mode=False, download=False, pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=256,
    num_workers=0,
    dataset=dict(
        type=dataset_type, data_prefix=data_root, split='test', test_mode=True, download=False, pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator
