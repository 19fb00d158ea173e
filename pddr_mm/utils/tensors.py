"""Small tensor helpers shared by the conversion tracer, the deploy checks and the tools."""
from typing import Any, List

from torch import Tensor


def flatten_tensors(out: Any) -> List[Tensor]:
    """Every tensor of a nested network output (tensors, tuples, lists, dicts or mmengine data elements of
    them), in order."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flatten_tensors(v)]
    if hasattr(out, 'items'):  # dicts, and InstanceData and the like
        return [t for _, v in out.items() for t in flatten_tensors(v)]
    return []


def max_rel_error(actual: Tensor, expected: Tensor) -> float:
    """max |actual - expected| / max |expected|: the measure the fusion tolerances are stated in."""
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()
