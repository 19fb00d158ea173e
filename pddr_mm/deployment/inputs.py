"""Generated input batches for detectors and classifiers, run through the model's own data preprocessor."""
from typing import Dict, List, Tuple

import torch
import torch.nn as nn

from .models import unwrap


def is_detector(model: nn.Module) -> bool:
    try:
        from mmdet.models.detectors import BaseDetector
    except ImportError:  # mmdet not installed: only classifiers
        return False
    return isinstance(unwrap(model), BaseDetector)


def _det_sample(h: int, w: int, with_gt: bool, gen: torch.Generator):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0),
                                         pad_shape=(h, w), img_id=0))
    if with_gt:
        num = 3
        xy = torch.rand(num, 2, generator=gen) * torch.tensor([w * 0.5, h * 0.5])
        wh = torch.rand(num, 2, generator=gen) * torch.tensor([w * 0.4, h * 0.4]) + 8
        boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([w - 1.0, h - 1.0]))], dim=1)
        sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.zeros(num, dtype=torch.long))
        sample.ignored_instances = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
    return sample


def _cls_sample(h: int, w: int, with_gt: bool):
    from mmpretrain.structures import DataSample
    sample = DataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
    if with_gt:
        sample.set_gt_label(0)
    return sample


def make_batch(model: nn.Module, batch_size: int, shape: Tuple[int, int], with_gt: bool = False,
               seed: int = 0) -> Dict:
    """A raw batch of random uint8 images of ``shape`` (H, W), with data samples of the model's task.

    ``with_gt`` adds ground truth (boxes for detectors, a label for classifiers) so that ``mode='loss'``
    works. Feed it to :func:`preprocess` (the model's data preprocessor) before the forward.
    """
    h, w = shape
    gen = torch.Generator().manual_seed(seed)
    images: List[torch.Tensor] = [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8)
                                  for _ in range(batch_size)]
    det = is_detector(model)
    samples = [_det_sample(h, w, with_gt, gen) if det else _cls_sample(h, w, with_gt) for _ in range(batch_size)]
    return dict(inputs=images, data_samples=samples)


def make_inputs(model: nn.Module, batch_size: int, shape: Tuple[int, int], with_gt: bool = False,
                training: bool = False, seed: int = 0) -> Dict:
    """A preprocessed batch (``inputs`` tensor on the model's device, ``data_samples``)."""
    with torch.no_grad():
        return unwrap(model).data_preprocessor(make_batch(model, batch_size, shape, with_gt, seed), training)
