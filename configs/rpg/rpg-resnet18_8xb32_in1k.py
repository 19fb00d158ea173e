# RPG ResNet-18 on ImageNet, the authors' setting: every convolution except the stem (the block convs and
# the 1x1 downsample convs, T = 11,157,504 kernel elements) is generated from one ring, with random signs
# and even sampling. The authors' ring has 11,160,576 entries, 3,072 more than T, which would never be
# read; pddr_mm refuses a ring larger than T, so this config takes N = T (ring_ratio=1): the same degrees
# of freedom as the plain network, reparameterised by one fixed permutation and random signs. The stem,
# the BNs and the classifier keep their own parameters. Recipe, data and runtime:
# ../resnet/resnet18_8xb32_in1k.py (the seed's recipe).
_base_ = '../resnet/resnet18_8xb32_in1k.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='RPGBackbone',
        backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(3, ), style='pytorch'),
        ring_ratio=1,
        rings='global',
        permutation='full',  # the authors' even sampling; 'block' is the cache-friendly scheme (docs/rpg.md)
        seed=0))
