"""Export a PDDR classifier or detector to ONNX in deploy (fused) form, and optionally check it in ONNX Runtime.

    python tools/deployment/pytorch2onnx.py CONFIG CHECKPOINT --output-file FILE \\
        [--shape H W] [--dynamic-export] [--opset N] [--verify]

CHECKPOINT is a training checkpoint (with its training config) or a deploy checkpoint written by
tools/model_converters/reparameterize.py (with the deploy config it wrote). The graph is the network's
forward in mode='tensor' on a preprocessed batch (normalised, padded: do the data preprocessing before
the runtime), its outputs flattened in order: a classifier's pre-softmax scores, a detector's raw head
outputs (before box decoding and NMS). --dynamic-export makes batch, height and width dynamic; PD-B
layers then run as an ONNX Loop over the samples (one Conv per image and layer; at batch 1 one Conv).
"""
import argparse

from mmengine.config import Config, DictAction

import pddr_mm  # noqa: F401  (registers the PDDR modules)
from pddr_mm.deployment.benchmark import default_shape
from pddr_mm.deployment.checkpoint import load_model
from pddr_mm.deployment.inputs import make_inputs
from pddr_mm.deployment.onnx import DEFAULT_OPSET, check_batch_sizes, export_onnx, ort_session, reference_model
from pddr_mm.utils.args import ImageShape, int_at_least, non_negative_float, positive_int


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='training config, or the deploy config written by reparameterize.py')
    parser.add_argument('checkpoint', help='training checkpoint, or the deploy checkpoint of the deploy config')
    parser.add_argument('--output-file', default='tmp.onnx', help='where to write the ONNX file')
    parser.add_argument('--shape', type=positive_int, nargs='+', action=ImageShape, metavar='SIZE',
                        help='input size: H W, or one number for both (default 800x1333 for detectors, '
                        '224x224 for classifiers)')
    parser.add_argument('--batch-size', type=positive_int, default=1,
                        help='batch of the traced input (the only batch a static export takes)')
    parser.add_argument('--dynamic-export', action='store_true', help='dynamic batch, height and width')
    parser.add_argument('--opset', '--opset-version', dest='opset', type=int_at_least(11),
                        default=DEFAULT_OPSET, help='ONNX opset (11 or later)')
    parser.add_argument('--verify', action='store_true',
                        help='run the file in ONNX Runtime against the unfused PyTorch model')
    parser.add_argument('--tolerance', type=non_negative_float, default=1e-4,
                        help='with --verify: largest allowed relative error')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override settings of the config')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    model = load_model(cfg, args.checkpoint)
    shape = args.shape or default_shape(model)
    data = make_inputs(model, args.batch_size, shape)
    info = export_onnx(model, data['inputs'], args.output_file, args.opset, args.dynamic_export,
                       data['data_samples'])
    axes = 'dynamic batch, height and width' if info['dynamic'] else f"static input shape {info['input_shape']}"
    print(f"exported {args.output_file}: opset {info['opset']}, {axes}, outputs {', '.join(info['output_names'])}; "
          f"{info['fused_layers']} PDDR / RPG layers fused, {info['conv_nodes']} Conv nodes per forward, "
          f"{info['loops']} per-sample Loops")
    if args.verify:
        reference = reference_model(model)
        what = 'fused PyTorch model (deploy checkpoint)' if reference is model else 'unfused PyTorch model (branches)'
        sizes = sorted({1, args.batch_size, args.batch_size + 1}) if info['dynamic'] else [args.batch_size]
        errors = check_batch_sizes(ort_session(args.output_file), reference, data['inputs'], sizes,
                                   data['data_samples'])
        for n, err in errors.items():
            print(f'ONNX Runtime vs {what}, batch {n}: max relative error {err:.2e}')
        worst = max(errors.values())
        print(f'largest relative error: {worst:.2e}')
        if not worst <= args.tolerance:
            raise RuntimeError(f'the ONNX file disagrees with PyTorch: relative error {worst:.2e} > '
                               f'{args.tolerance:g}')
        info['max_rel_error'] = worst
    return info


if __name__ == '__main__':
    main()
