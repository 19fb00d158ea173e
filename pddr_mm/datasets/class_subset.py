"""ClassSubset: some classes of a classification dataset, relabelled, optionally a seeded sample of them cut
into parts: a pretraining task and a transfer task from one dataset, or VTAB-1k's 800 train / 200 val."""
import copy
from typing import Optional, Sequence, Tuple

import numpy as np
from mmengine.registry import DATASETS


@DATASETS.register_module()
class ClassSubset:
    """The images of ``classes`` in ``dataset``, labelled 0..k-1 in the order of ``classes``.

    ``num_samples`` draws that many images at random (``seed``; without replacement, over the chosen classes
    together), and ``part=(start, stop)`` keeps the slice [start, stop) of that draw: two configs with the
    same ``num_samples`` and ``seed`` and the parts (0, 800) and (800, 1000) get disjoint training and
    validation images, as VTAB-1k splits its 1,000. Without ``num_samples`` every image of the classes is
    kept, in the dataset's order. The metainfo's ``classes`` are the chosen ones' names.

    Args:
        dataset: an mmpretrain dataset (or its config) with ``get_gt_labels``, e.g. ``FashionMNIST``.
        classes: indices of the classes to keep, in their new label order.
        num_samples: how many images to draw; None keeps all.
        part: ``(start, stop)`` of the draw (or of all images when ``num_samples`` is None).
        seed: the draw's seed (a generator of its own: the global random state is not touched).
    """

    def __init__(self, dataset, classes: Sequence[int], num_samples: Optional[int] = None,
                 part: Optional[Tuple[int, int]] = None, seed: int = 0) -> None:
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        if not hasattr(self.dataset, 'get_gt_labels'):
            raise TypeError(f'ClassSubset needs a classification dataset with get_gt_labels (mmpretrain\'s), got '
                            f'{type(self.dataset).__name__}')
        names = self.dataset.metainfo.get('classes') or []
        classes = list(classes)
        if not classes or len(set(classes)) != len(classes) or \
                not all(isinstance(c, int) and 0 <= c < max(len(names), 1) for c in classes):
            raise ValueError(f'ClassSubset: classes must be distinct class indices of {type(self.dataset).__name__} '
                             f'(0..{len(names) - 1}), got {classes}')
        labels = np.asarray(self.dataset.get_gt_labels())
        indices = np.flatnonzero(np.isin(labels, classes))
        if num_samples is not None:
            if not isinstance(num_samples, int) or not 0 < num_samples <= len(indices):
                raise ValueError(f'ClassSubset: num_samples must be in [1, {len(indices)}] (the images of classes '
                                 f'{classes}), got {num_samples}')
            indices = np.random.default_rng(seed).choice(indices, num_samples, replace=False)
        if part is not None:
            start, stop = part
            if not 0 <= start < stop <= len(indices):
                raise ValueError(f'ClassSubset: part must be (start, stop) with 0 <= start < stop <= {len(indices)}, '
                                 f'got {part}')
            indices = indices[start:stop]
        self.indices = [int(i) for i in indices]
        self.label_map = {c: k for k, c in enumerate(classes)}
        self._metainfo = dict(copy.deepcopy(self.dataset.metainfo), classes=tuple(names[c] for c in classes))

    @property
    def metainfo(self) -> dict:
        return copy.deepcopy(self._metainfo)

    def get_gt_labels(self) -> np.ndarray:
        labels = np.asarray(self.dataset.get_gt_labels())
        return np.array([self.label_map[int(labels[i])] for i in self.indices], dtype=np.int64)

    def get_data_info(self, idx: int) -> dict:
        info = self.dataset.get_data_info(self.indices[idx])
        info['gt_label'] = np.array(self.label_map[int(info['gt_label'])], dtype=np.int64)
        return info

    def __getitem__(self, idx: int) -> dict:
        return self.dataset.pipeline(self.get_data_info(idx))

    def __len__(self) -> int:
        return len(self.indices)
