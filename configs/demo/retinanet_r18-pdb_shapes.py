# The demo model: retinanet_r18-plain_shapes.py with PD-B convolutions in the backbone. Every 3x3 conv of
# the residual blocks trains as four branches (two standard 3x3, a group 3x3, a 3x1+1x3 skeleton), mixed
# per sample by a refinement module, and is fused into one conv per sample for inference
# (tools/test.py --deploy). Trained from scratch, so norm_eval=False: the branch BNs learn their stats.
# Data, head and schedule (12 epochs, validated after each: see the base) are the base's, unchanged,
# so tools/run_demo.sh compares the two on the same schedule.
_base_ = './retinanet_r18-plain_shapes.py'

model = dict(
    backbone=dict(
        type='PDResNet',
        mode='B',
        branches=('standard', 'standard', 'group', 'skeleton'),
        branch_groups=8,  # divides every block width (16, 32, 64, 128)
        reduction=4,  # refinement hidden width: in_channels // 4 (16 would leave 1 unit in the first stage)
    ))
