"""Model-level helpers shared by the deploy hook and tools: unwrapping, unfused copies, output checks."""
import copy
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.model import is_model_wrapper
from torch import Tensor

from pddr_mm.ops import PDConv2d, deploy_layers, switch_to_deploy
from pddr_mm.rpg import ModelRing
from pddr_mm.utils import flatten_tensors, max_rel_error


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP / FSDP / mmengine wrappers."""
    return model.module if is_model_wrapper(model) else model


def pd_layers(model: nn.Module) -> List[PDConv2d]:
    return [m for m in model.modules() if isinstance(m, PDConv2d)]


def deploy_kinds(model: nn.Module) -> str:
    """What :func:`pddr_mm.switch_to_deploy` would switch in ``model``, for logs: 'PDConv2d', 'RPGConv2d', or both
    joined by ' and '."""
    kinds = sorted({type(m).__name__ for m in deploy_layers(model) if not isinstance(m, ModelRing)})
    return ' and '.join(kinds) or 'no'


def set_forward_path(model: nn.Module, forward_path: str) -> None:
    """Force one computation path on every (unfused) PDConv2d of ``model``."""
    for m in pd_layers(model):
        m.forward_path = forward_path


@contextmanager
def forward_path(model: nn.Module, path: str) -> Iterator[None]:
    """Every unfused PDConv2d of ``model`` computes through ``path`` inside the block, then as before: the
    unfused reference ('branches') or the deploy form's computation ('fused') without a copy of the model."""
    layers = [m for m in pd_layers(model) if not m.deploy]
    saved = [m.forward_path for m in layers]
    set_forward_path(model, path)
    try:
        yield
    finally:
        for m, p in zip(layers, saved):
            m.forward_path = p


def unfused_reference(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` that computes branch by branch (the unfused reference)."""
    ref = copy.deepcopy(unwrap(model)).eval()
    set_forward_path(ref, 'branches')
    return ref


def fused_copy(model: nn.Module) -> Tuple[nn.Module, int]:
    """An eval-mode, fused copy of ``model`` (the original is not touched) and how many layers were fused."""
    fused = copy.deepcopy(unwrap(model)).eval()
    return fused, switch_to_deploy(fused)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_trainable(model: nn.Module) -> int:
    """The degrees of freedom training moves: parameters with ``requires_grad`` (an RPG model: its rings plus
    every layer it left plain; the generated kernels are not parameters)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def format_count(n: Optional[float], digits: int = 3) -> str:
    """A parameter or FLOP count as 25.557M / 1.822G ('n/a' for None), for tables and logs."""
    if n is None:
        return 'n/a'
    for unit, div in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if abs(n) >= div:
            return f'{n / div:.{digits}f}{unit}'
    return str(int(n))


class TensorMode(nn.Module):
    """``model(inputs, data_samples, mode='tensor')`` as a one-argument module, for FLOP tracing.

    Two-stage detectors read image metas from the data samples even in tensor mode (as mmdet's own
    get_flops does, the samples are bound here).
    """

    def __init__(self, model: nn.Module, data_samples: Optional[list] = None) -> None:
        super().__init__()
        self.model = unwrap(model)
        self.data_samples = data_samples

    def forward(self, inputs: Tensor) -> Any:
        return self.model(inputs, self.data_samples, mode='tensor')


def count_flops(model: nn.Module, inputs: Tensor, data_samples: Optional[list] = None) -> int:
    """FLOPs of ``model`` in tensor mode on ``inputs`` (mmengine's FlopAnalyzer: one multiply-add = 1 FLOP)."""
    from mmengine.analysis import FlopAnalyzer
    analyzer = FlopAnalyzer(TensorMode(model, data_samples).eval(), (inputs, ))
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return int(analyzer.total())


def compare_outputs(actual: Any, expected: Any) -> float:
    """Largest relative error (``max_rel_error``) over matching tensors of two network outputs."""
    a, e = flatten_tensors(actual), flatten_tensors(expected)
    if len(a) != len(e) or not a:
        raise RuntimeError(f'cannot compare network outputs: {len(a)} tensors against {len(e)}')
    worst = 0.0
    for x, y in zip(a, e):
        if x.shape != y.shape:
            raise RuntimeError(f'fused output shape {tuple(x.shape)} differs from unfused {tuple(y.shape)}')
        worst = max(worst, max_rel_error(x.float(), y.float()))
    return worst


@torch.no_grad()
def tensor_forward(model: nn.Module, data: Dict) -> Any:
    """The network output (``mode='tensor'``) of an already preprocessed batch."""
    return unwrap(model)(data['inputs'], data.get('data_samples'), mode='tensor')

