# PD-B MobileViT-S on ImageNet with mmpretrain's MobileViT recipe (data, schedule and runtime of the base
# config, unchanged). PDDRBackbone converts every conv + BN pair of the backbone with a 3x3 or larger
# kernel (found from a traced forward, see pddr_mm/models/convert.py) into a PD-B PDConv2d; the backbone
# config itself is the base's. Deploy with tools/model_converters/reparameterize.py; its plain baseline is the base config.
_base_ = 'mmpretrain::mobilevit/mobilevit-small_8xb128_in1k.py'

custom_imports = dict(imports=['pddr_mm'], allow_failed_imports=False)

# branch_groups=16 divides the channels of every converted layer that is not depthwise (16-320), so
# all of them keep the group branch except the 3-channel stem (the default 64 divides only two of them)
model = dict(
    backbone=dict(
        _delete_=True, type='PDDRBackbone', backbone={{_base_.model.backbone}}, mode='B',
        branch_groups=16))
