"""ONNX export of PDDR models in deploy form and their check in ONNX Runtime (``tools/deployment/pytorch2onnx.py``).

The exported graph is the network's ``mode='tensor'`` forward on a preprocessed batch (the input is what
the data preprocessor gives: normalised, padded), its outputs flattened in order: a classifier's
pre-softmax scores, a detector's raw head outputs (before box decoding and NMS). Needs ``onnx`` and
``onnxruntime`` (``pip install -e .[deploy]``).
"""
import contextlib
import importlib
import io
import os
import os.path as osp
import warnings
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from pddr_mm.ops import MixedConv2d, fuse_pd_conv_bn, is_deployed
from pddr_mm.ops.onnx_export import dynamic_batch_export

from pddr_mm.utils import flatten_tensors

from .models import TensorMode, compare_outputs, fused_copy, unfused_reference, unwrap

INPUT_NAME = 'input'
DEFAULT_OPSET = 17


def _require(module: str):
    """Import ``onnx`` / ``onnxruntime``, or say how to install them."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f'ONNX export and checks need the {module} package: pip install -e .[deploy]') from e


class TensorOutputs(TensorMode):
    """``model(inputs, data_samples, mode='tensor')`` with its nested outputs as one flat tuple: what is exported."""

    def forward(self, inputs: Tensor) -> tuple:
        return tuple(flatten_tensors(super().forward(inputs)))


def export_onnx(model: nn.Module, inputs: Tensor, output_file: str, opset: int = DEFAULT_OPSET,
                dynamic: bool = False, data_samples: Optional[list] = None) -> Dict:
    """Export a fused copy of ``model`` (any PDDR layer still in branch form is fused; ``model`` is untouched).

    ``dynamic``: batch, height and width of the input are dynamic axes; PD-B layers then become an ONNX
    Loop over the samples of one Conv each, skipped at batch 1 (see ``pddr_mm.ops.onnx_export``). Without
    it the graph is fixed to the shape of ``inputs``, PD-B layers are one grouped Conv over the batch, and a
    runtime rejects any other input shape. Returns what was written: file, output names, fused layers,
    Loops, and the Conv nodes one forward runs through (``onnx_graph.count_ops``).
    """
    onnx = _require('onnx')
    from .onnx_graph import count_ops, expand_per_sample_convs
    if opset < 11:
        raise ValueError(f'opset {opset} is too old: PDDR exports need opset 11 or later')
    fused, num_fused = fused_copy(model)
    fuse_pd_conv_bn(fused)  # a runtime folds Conv + BN only where the Conv's weight is a constant (not PD-B's)
    wrapper = TensorOutputs(fused, data_samples).eval()
    with torch.no_grad():
        num_outputs = len(wrapper(inputs))
    if num_outputs == 0:
        raise RuntimeError("the model's tensor-mode forward returned no tensor: nothing to export")
    output_names = [f'output{i}' for i in range(num_outputs)]
    per_sample = dynamic and any(isinstance(m, MixedConv2d) for m in fused.modules())
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {INPUT_NAME: {0: 'batch', 2: 'height', 3: 'width'}}
        dynamic_axes.update({name: {0: 'batch'} for name in output_names})
    buffer = io.BytesIO()
    with warnings.catch_warnings(), dynamic_batch_export() if per_sample else contextlib.nullcontext():
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        warnings.simplefilter('ignore', DeprecationWarning)
        try:
            torch.onnx.export(wrapper, (inputs, ), buffer, input_names=[INPUT_NAME], output_names=output_names,
                              dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True,
                              custom_opsets={'pddr': 1} if per_sample else None, dynamo=False)
        except ModuleNotFoundError as e:
            if not (e.name or '').startswith('mmdet.core'):
                raise
            # mmdet 3.x's box coders still import mmdet 2.x's export helpers while tracing for ONNX
            raise RuntimeError(
                "this detector decodes boxes in mode='tensor' (e.g. a two-stage detector's RPN proposals), and "
                f"mmdet's ONNX branch of the box coder imports {e.name}, which mmdet 3.x no longer has: "
                'only detectors whose tensor mode stops at the head outputs (RetinaNet, FCOS, ...) export here') from e
    proto = onnx.load_from_string(buffer.getvalue())
    loops = expand_per_sample_convs(proto)
    onnx.checker.check_model(proto)
    out_dir = osp.dirname(osp.abspath(output_file))
    os.makedirs(out_dir, exist_ok=True)
    onnx.save(proto, output_file)
    return dict(output_file=output_file, output_names=output_names, fused_layers=num_fused, loops=loops,
                conv_nodes=count_ops(proto, 'Conv'), dynamic=dynamic, opset=opset,
                input_shape=list(inputs.shape))


def ort_session(onnx_file: Union[str, bytes], num_threads: Optional[int] = None):
    """An ONNX Runtime CPU session: all graph optimisations, ``num_threads`` intra-op threads (default: as torch)."""
    ort = _require('onnxruntime')
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads or torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(onnx_file, options, providers=['CPUExecutionProvider'])


def run_onnx(session, inputs: Tensor) -> List[np.ndarray]:
    """The session's outputs for ``inputs``; a clear error where the file was exported for another shape."""
    expected = session.get_inputs()[0].shape
    actual = list(inputs.shape)
    if len(expected) != len(actual) or any(isinstance(e, int) and e != a for e, a in zip(expected, actual)):
        raise ValueError(f'the ONNX file takes inputs of shape {expected}, got {actual}: it was exported with a '
                         'static shape; export with --dynamic-export (dynamic batch, height and width) to run '
                         'other shapes')
    return session.run(None, {session.get_inputs()[0].name: inputs.detach().cpu().numpy()})


def reference_model(model: nn.Module) -> nn.Module:
    """What an export is checked against: the unfused model computing branch by branch, or, for a model
    loaded from a deploy checkpoint (no branches left), the fused PyTorch model itself."""
    if is_deployed(model):
        return unwrap(model).eval()
    return unfused_reference(model)


def verify_onnx(session, reference: nn.Module, inputs: Tensor, data_samples: Optional[list] = None) -> float:
    """Largest relative error (``max |ort - torch| / max |torch|``, worst output) of the file against
    ``reference`` in PyTorch on ``inputs``."""
    with torch.no_grad():
        expected = TensorOutputs(reference, data_samples).eval()(inputs)
    actual = [torch.from_numpy(a) for a in run_onnx(session, inputs)]
    return compare_outputs(actual, list(expected))


def batch_of(inputs: Tensor, batch_size: int) -> Tensor:
    """``inputs`` repeated or cut to ``batch_size`` samples, each different (a shifted copy), for checks."""
    reps = -(-batch_size // inputs.shape[0])
    batch = torch.cat([inputs.roll(i, dims=-1) for i in range(reps)])[:batch_size]
    return batch.contiguous()


def check_batch_sizes(session, reference: nn.Module, inputs: Tensor, batch_sizes: Sequence[int],
                      data_samples: Optional[list] = None) -> Dict[int, float]:
    """:func:`verify_onnx` at several batch sizes (a dynamic-batch file); the data samples follow the batch."""
    errors = {}
    for n in batch_sizes:
        samples = None if data_samples is None else [data_samples[i % len(data_samples)] for i in range(n)]
        errors[n] = verify_onnx(session, reference, batch_of(inputs, n), samples)
    return errors
