"""Data transforms (in mmengine's root TRANSFORMS registry) and a dataset wrapper (root DATASETS), so that
mmpretrain and mmdet configs find them."""
from .class_subset import ClassSubset
from .transforms import PerImageStandardize

__all__ = ['ClassSubset', 'PerImageStandardize']
