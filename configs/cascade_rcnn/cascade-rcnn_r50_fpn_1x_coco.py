# Plain Cascade R-CNN R-50-FPN 1x (mmdet's config, unchanged): the baseline.
_base_ = 'mmdet::cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['pddr_mm'], allow_failed_imports=False)
