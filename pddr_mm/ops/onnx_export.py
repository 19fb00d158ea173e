"""How a deployed PD-B layer's per-sample convolution appears in an ONNX export with a dynamic batch.

Eager PyTorch folds the batch into the channels and runs one grouped convolution with ``N * groups``
groups (``fusion.per_sample_conv2d``). ONNX's ``Conv.group`` is a static attribute, so that graph is
only valid at the batch size it was traced with. Inside :func:`dynamic_batch_export` the exporter
instead records one placeholder node, ``pddr::PerSampleConv2d(x, kernels, biases)``, which
``pddr_mm.deployment.onnx_graph.expand_per_sample_convs`` replaces by an ONNX ``Loop`` over the samples
whose body is one standard ``Conv`` with the sample's mixed kernel as a runtime input (behind an ``If``
that runs that ``Conv`` directly at batch 1): one convolution per image and layer, for any batch size.
Outside that context nothing changes, so a plain ``torch.onnx.export`` of a fused model still gives a
standard (static-batch) graph.
"""
import contextlib
from typing import Iterator, Sequence

import torch
from torch import Tensor

from .fusion import per_sample_conv2d

DOMAIN = 'pddr'
OP_TYPE = 'PerSampleConv2d'
_state = dict(dynamic_batch=False)


@contextlib.contextmanager
def dynamic_batch_export() -> Iterator[None]:
    """While active, an ONNX export records PD-B per-sample convolutions as ``pddr::PerSampleConv2d``."""
    previous = _state['dynamic_batch']
    _state['dynamic_batch'] = True
    try:
        yield
    finally:
        _state['dynamic_batch'] = previous


def use_placeholder() -> bool:
    """True while tracing for an ONNX export inside :func:`dynamic_batch_export`."""
    return _state['dynamic_batch'] and torch.onnx.is_in_onnx_export()


class PerSampleConv2dPlaceholder(torch.autograd.Function):
    """Computes ``per_sample_conv2d`` (so tracing sees the right shapes) and exports as one placeholder node."""

    @staticmethod
    def forward(ctx, x: Tensor, kernels: Tensor, biases: Tensor, stride: Sequence[int], padding: Sequence[int],
                dilation: Sequence[int], groups: int) -> Tensor:
        # a copy, not the reshaped view: the layers after it (ReLU, residual add) may work in place
        return per_sample_conv2d(x, kernels, biases, stride, padding, dilation, groups).clone()

    @staticmethod
    def symbolic(g, x, kernels, biases, stride, padding, dilation, groups):
        return g.op(f'{DOMAIN}::{OP_TYPE}', x, kernels, biases, strides_i=list(stride),
                    pads_i=[padding[0], padding[1], padding[0], padding[1]], dilations_i=list(dilation),
                    group_i=groups)


def per_sample_conv2d_placeholder(x: Tensor, kernels: Tensor, biases: Tensor, stride: Sequence[int],
                                  padding: Sequence[int], dilation: Sequence[int], groups: int) -> Tensor:
    return PerSampleConv2dPlaceholder.apply(x, kernels, biases, tuple(stride), tuple(padding), tuple(dilation),
                                            groups)
