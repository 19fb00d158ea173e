# Plain RetinaNet R-50-FPN 1x (mmdet's config, unchanged): the baseline the PDDR variants are compared to.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['pddr_mm'], allow_failed_imports=False)
