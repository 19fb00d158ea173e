"""Graph passes on exported ONNX models: PD-B placeholders into Loops, operator counts.

Needs the ``onnx`` package (``pip install -e .[deploy]``).
"""
from typing import Iterator

import onnx
from onnx import TensorProto, helper

from pddr_mm.ops.onnx_export import DOMAIN, OP_TYPE


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ('', 'ai.onnx'))


def _axes_node(op: str, inp: str, out: str, opset: int, name: str) -> list:
    """``Squeeze``/``Unsqueeze`` on axis 0: an attribute up to opset 12, an input from 13."""
    if opset < 13:
        return [helper.make_node(op, [inp], [out], name=name, axes=[0])]
    axes = f'{name}/axes'
    return [helper.make_node('Constant', [], [axes], name=axes,
                             value=helper.make_tensor(axes, TensorProto.INT64, [1], [0])),
            helper.make_node(op, [inp, axes], [out], name=name)]


def _loop_nodes(node: onnx.NodeProto, opset: int, elem_type: int) -> list:
    """An ONNX Loop over the batch computing ``pddr::PerSampleConv2d``: sample n convolved with kernels[n]."""
    x, kernels, biases = node.input
    (out, ), p = node.output, node.name or node.output[0]
    conv_attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    zero, shape, trips = f'{p}/zero', f'{p}/shape', f'{p}/batch'
    outer = [
        helper.make_node('Constant', [], [zero], name=zero, value=helper.make_tensor(zero, TensorProto.INT64, [], [0])),
        helper.make_node('Shape', [x], [shape], name=shape),
        helper.make_node('Gather', [shape, zero], [trips], name=trips, axis=0),
    ]
    i, cond_in, cond_out, idx = f'{p}/i', f'{p}/cond_in', f'{p}/cond_out', f'{p}/i1'
    xi, ki, bi, yi, yo = (f'{p}/{s}' for s in ('x_n', 'kernel_n', 'bias_n', 'conv_n', 'y_n'))
    body_nodes = (_axes_node('Unsqueeze', i, idx, opset, f'{p}/unsqueeze') + [
        helper.make_node('Gather', [x, idx], [xi], name=xi, axis=0),  # (1, C, H, W): the sample stays 4-D
        helper.make_node('Gather', [kernels, i], [ki], name=ki, axis=0),
        helper.make_node('Gather', [biases, i], [bi], name=bi, axis=0),
        helper.make_node('Conv', [xi, ki, bi], [yi], name=f'{p}/conv', **conv_attrs),
    ] + _axes_node('Squeeze', yi, yo, opset, f'{p}/squeeze') + [helper.make_node('Identity', [cond_in], [cond_out])])
    body = helper.make_graph(
        body_nodes, f'{p}/body',
        [helper.make_tensor_value_info(i, TensorProto.INT64, []),
         helper.make_tensor_value_info(cond_in, TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
         helper.make_tensor_value_info(yo, elem_type, ['channels', 'height', 'width'])])
    return outer + [helper.make_node('Loop', [trips, ''], [out], name=f'{p}/loop', body=body)]


def expand_per_sample_convs(model: onnx.ModelProto) -> int:
    """Replace every ``pddr::PerSampleConv2d`` node by a Loop of standard Conv, in place; returns how many.

    The result is plain ONNX (the ``pddr`` domain is dropped), runnable by any runtime that has Loop.
    """
    graph, opset = model.graph, _opset(model)
    elem_type = graph.input[0].type.tensor_type.elem_type if graph.input else TensorProto.FLOAT
    nodes, count = [], 0
    for node in graph.node:
        if node.domain == DOMAIN and node.op_type == OP_TYPE:
            nodes += _loop_nodes(node, opset, elem_type)
            count += 1
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [o for o in model.opset_import if o.domain != DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return count


def iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph``, those in subgraphs (Loop and If bodies) included."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_nodes(attr.g)
            for g in attr.graphs:
                yield from iter_nodes(g)


def count_ops(model: onnx.ModelProto, op_type: str) -> int:
    """How many ``op_type`` nodes the model holds, subgraphs included (a Loop's Conv counts once)."""
    return sum(node.op_type == op_type for node in iter_nodes(model.graph))
