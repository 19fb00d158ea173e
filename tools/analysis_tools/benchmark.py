"""Latency of a PDDR model unfused, fused and as its plain baseline, measured interleaved in one process.

Inference latency is the model's forward in mode='tensor' on an already preprocessed batch of random
images (data loading, preprocessing and post-processing are not included). The fused model and the plain
baseline have every remaining conv + BN pair folded (pddr_mm.fuse_pd_conv_bn, mmcv's fuse_conv_bn), as
deployed models do. --train adds the training step (forward + backward + SGD step) and memory of the
unfused PDDR model against the plain baseline, with BN in training mode (branch by branch) and with frozen
BN (norm_eval style, one fused conv).

--backend onnxruntime exports the fused PDDR model and the plain baseline to ONNX the same way (dynamic
batch, one opset; tools/deployment/pytorch2onnx.py) and times both in ONNX Runtime on the CPU, with as
many intra-op threads as torch uses (--threads sets both) and all graph optimisations.

Each ratio is printed as the ratio of the medians and, the rows being timed in pairs, with the median and
p10-p90 of the per-repetition ratios; a warning says when the repeats are too few or the rows' ranges
overlap (the ratio is within noise). A config without PDDR layers is refused: every row would be the same
network. A deploy config has no unfused row.
"""
import argparse
import json

import torch
from mmengine.config import Config, DictAction

import pddr_mm  # noqa: F401  (registers the PDDR modules)
from pddr_mm.deployment.benchmark import benchmark_onnxruntime, format_onnx_report, format_report, run_benchmark
from pddr_mm.utils.args import int_at_least, non_negative_int, positive_int


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='PDDR (training) config')
    parser.add_argument('--checkpoint', help='training checkpoint (default: random weights)')
    parser.add_argument('--batch-size', type=positive_int, default=1)
    parser.add_argument('--shape', type=positive_int, nargs=2, metavar=('H', 'W'),
                        help='input size (default 800x1333 for detectors, 224x224 for classifiers)')
    parser.add_argument('--repeat-num', type=positive_int, default=50,
                        help='timed repetitions of each model (fewer than 10 get a warning)')
    parser.add_argument('--num-warmup', type=non_negative_int, default=10,
                        help='untimed repetitions of each model first')
    parser.add_argument('--threads', type=positive_int,
                        help='CPU threads of torch and ONNX Runtime (default: torch\'s); 1 for reproducible ratios')
    parser.add_argument('--train', action='store_true', help='also time training steps and their memory')
    parser.add_argument('--backend', choices=('pytorch', 'onnxruntime'), default='pytorch',
                        help='onnxruntime: time the exported fused model against the exported plain one (CPU)')
    parser.add_argument('--opset', type=int_at_least(11), help='ONNX opset of the onnxruntime backend (default 17)')
    parser.add_argument('--device', help='cpu or cuda (default: cuda where present)')
    parser.add_argument('--json', help='write the figures to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override settings of the config')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.backend == 'onnxruntime' and (args.train or (args.device and args.device != 'cpu')):
        raise ValueError('--backend onnxruntime times inference on the CPU only: drop --train and --device')
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.backend == 'onnxruntime':
            result = benchmark_onnxruntime(cfg, args.checkpoint, args.batch_size, args.shape, args.repeat_num,
                                           args.num_warmup, args.opset, args.threads)
            print(format_onnx_report(result))
        else:
            result = run_benchmark(cfg, args.checkpoint, args.batch_size, args.shape, args.repeat_num,
                                   args.num_warmup, args.train, args.device)
            print(format_report(result))
    finally:
        torch.set_num_threads(threads)  # main() may run inside a longer process (the tests, a notebook)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    main()
