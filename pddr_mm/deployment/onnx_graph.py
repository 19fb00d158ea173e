"""Graph passes on exported ONNX models: PD-B placeholders into If / Loop nodes, operators per forward.

Needs the ``onnx`` package (``pip install -e .[deploy]``).
"""
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


def _per_sample_nodes(node: onnx.NodeProto, opset: int, elem_type: int) -> list:
    """``pddr::PerSampleConv2d`` (sample n convolved with kernels[n]) in standard ONNX: an ``If`` on the batch
    size whose batch-1 branch is one ``Conv`` with the squeezed kernel, and whose other branch is a ``Loop``
    over the samples, one ``Conv`` each. Either way each image meets one convolution; the batch-1 branch
    saves the Loop's copies (the sample, its kernel, the stacked output), 8-17 % of a PD-B ResNet's batch-1
    latency in ONNX Runtime."""
    x, kernels, biases = node.input
    (out, ), p = node.output, node.name or node.output[0]
    conv_attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def const(name, value):
        return helper.make_node('Constant', [], [name], name=name,
                                value=helper.make_tensor(name, TensorProto.INT64, [], [value]))

    def output(name, rank):
        return helper.make_tensor_value_info(name, elem_type, ['batch', 'channels', 'height', 'width'][4 - rank:])

    zero, one, shape, batch, single = (f'{p}/{s}' for s in ('zero', 'one', 'shape', 'batch', 'single'))
    outer = [const(zero, 0), const(one, 1), helper.make_node('Shape', [x], [shape], name=shape),
             helper.make_node('Gather', [shape, zero], [batch], name=batch, axis=0),
             helper.make_node('Equal', [batch, one], [single], name=single)]

    k0, b0, y0 = f'{p}/kernel_0', f'{p}/bias_0', f'{p}/conv_0'
    single_nodes = (_axes_node('Squeeze', kernels, k0, opset, f'{p}/squeeze_kernel') +
                    _axes_node('Squeeze', biases, b0, opset, f'{p}/squeeze_bias') +
                    [helper.make_node('Conv', [x, k0, b0], [y0], name=y0, **conv_attrs)])

    i, cond_in, cond_out, idx = f'{p}/i', f'{p}/cond_in', f'{p}/cond_out', f'{p}/i1'
    xi, ki, bi, yi, yo, stacked = (f'{p}/{s}' for s in ('x_n', 'kernel_n', 'bias_n', 'conv_n', 'y_n', 'stacked'))
    body_nodes = (_axes_node('Unsqueeze', i, idx, opset, f'{p}/unsqueeze') + [
        helper.make_node('Gather', [x, idx], [xi], name=xi, axis=0),  # (1, C, H, W): the sample stays 4-D
        helper.make_node('Gather', [kernels, i], [ki], name=ki, axis=0),
        helper.make_node('Gather', [biases, i], [bi], name=bi, axis=0),
        helper.make_node('Conv', [xi, ki, bi], [yi], name=yi, **conv_attrs),
    ] + _axes_node('Squeeze', yi, yo, opset, f'{p}/squeeze') + [helper.make_node('Identity', [cond_in], [cond_out])])
    body = helper.make_graph(body_nodes, f'{p}/body',
                             [helper.make_tensor_value_info(i, TensorProto.INT64, []),
                              helper.make_tensor_value_info(cond_in, TensorProto.BOOL, [])],
                             [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []), output(yo, 3)])
    loop = helper.make_node('Loop', [batch, ''], [stacked], name=f'{p}/loop', body=body)

    return outer + [helper.make_node(
        'If', [single], [out], name=f'{p}/if',
        then_branch=helper.make_graph(single_nodes, f'{p}/batch_1', [], [output(y0, 4)]),
        else_branch=helper.make_graph([loop], f'{p}/batch_loop', [], [output(stacked, 4)]))]


def expand_per_sample_convs(model: onnx.ModelProto) -> int:
    """Replace every ``pddr::PerSampleConv2d`` node by standard ONNX (``_per_sample_nodes``), in place; returns
    how many.

    The result is plain ONNX (the ``pddr`` domain is dropped), runnable by any runtime that has If and Loop.
    """
    graph, opset = model.graph, _opset(model)
    elem_type = graph.input[0].type.tensor_type.elem_type if graph.input else TensorProto.FLOAT
    nodes, count = [], 0
    for node in graph.node:
        if node.domain == DOMAIN and node.op_type == OP_TYPE:
            nodes += _per_sample_nodes(node, opset, elem_type)
            count += 1
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [o for o in model.opset_import if o.domain != DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return count


def count_ops(graph, op_type: str) -> int:
    """How many ``op_type`` nodes one forward runs through: a Loop's body counts once (it repeats per sample,
    not per branch), an If counts its larger branch (only one runs). A ModelProto or a GraphProto."""
    graph = getattr(graph, 'graph', graph)
    total = 0
    for node in graph.node:
        total += node.op_type == op_type
        subgraphs = [helper.get_attribute_value(a) for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
        counts = [count_ops(g, op_type) for g in subgraphs]
        if counts:
            total += max(counts) if node.op_type == 'If' else sum(counts)
    return total

