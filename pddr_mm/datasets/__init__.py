"""Data transforms (registered in mmengine's root TRANSFORMS registry, so mmpretrain and mmdet configs
find them)."""
from .transforms import PerImageStandardize

__all__ = ['PerImageStandardize']
