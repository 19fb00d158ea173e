"""Per-image standardisation, for inputs whose brightness and contrast carry no class information."""
import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.registry import TRANSFORMS


@TRANSFORMS.register_module()
class PerImageStandardize(BaseTransform):
    """Shift and scale each image to mean 0 and std 1 over all its pixels and channels.

    As TensorFlow's ``per_image_standardization``: the std is floored at ``1/sqrt(num_pixels)`` so a flat
    image does not divide by zero. The result is float32, so the data preprocessor must not normalise
    again (``mean=None, std=None``). The Dyn-Adapter study uses it after ``RandomGrayscale(prob=1.0)``:
    a ViT trained from scratch on the generated crops stays at chance on colour inputs with a fixed mean/std
    (docs/benchmarks.md).

    Required keys: ``img``. Modified keys: ``img``.
    """

    def transform(self, results: dict) -> dict:
        img = results['img'].astype(np.float32)
        std = max(float(img.std()), 1.0 / np.sqrt(img.size))
        results['img'] = (img - img.mean()) / std
        return results
