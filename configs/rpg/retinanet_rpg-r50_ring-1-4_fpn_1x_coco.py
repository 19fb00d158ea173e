# RetinaNet whose ResNet-50 convolutions (all but the stem) are generated from one ring of 1/4 of their
# kernel elements. A ring cannot take plain kernels, so the ImageNet init of the base is dropped and the
# backbone trains from scratch: every stage trains (frozen_stages=-1; a frozen stage would stay plain
# with random weights) and the BNs learn their statistics (norm_eval=False). To start from an RPG ImageNet
# checkpoint instead, give the backbone init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')
# of a classifier built with the same ring arguments (a different generation is refused when loading).
_base_ = '../retinanet/retinanet_r50_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='RPGBackbone',
        backbone=dict(
            type='ResNet',
            depth=50,
            num_stages=4,
            out_indices=(0, 1, 2, 3),
            frozen_stages=-1,
            norm_cfg=dict(type='BN', requires_grad=True),
            norm_eval=False,
            style='pytorch',
            init_cfg=None),
        ring_ratio=1 / 4,
        rings='global',
        permutation='full',
        seed=0))
