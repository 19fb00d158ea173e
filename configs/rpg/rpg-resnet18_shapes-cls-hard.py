# The study config of docs/benchmarks.md ("RPG study"): the demo's narrow ResNet-18 (widths 16-32-64-128)
# on the hard generated crops, every convolution but the stem generated from one ring of 1/4 of their
# kernel elements with the cache-friendly block permutation. ablation.py varies the ring ratio and the
# scheme, and derives the plain baselines (the `plain` preset: the inner ResNet) at other widths.
#   python tools/misc/generate_shapes_dataset.py --hard --out data/shapes_hard
#   python tools/train.py configs/rpg/rpg-resnet18_shapes-cls-hard.py
_base_ = '../demo/pd-b-resnet18_shapes-cls-hard.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='RPGBackbone',
        backbone=dict(
            type='ResNet',
            depth=18,
            stem_channels=16,
            base_channels=16,
            strides=(1, 1, 2, 2),  # 32 px crops, as the demo classifier
            out_indices=(3, )),
        ring_ratio=1 / 4,
        permutation='block',
        trace_shape=(32, 32)))
