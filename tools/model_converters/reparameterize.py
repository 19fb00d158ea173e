"""Convert a PDDR or RPG training checkpoint into a deploy (fused) checkpoint and write the matching deploy config.

    python tools/model_converters/reparameterize.py CONFIG CHECKPOINT [--out-dir DIR]

then ``python tools/test.py DIR/<config>_deploy.py DIR/<checkpoint>_deploy.pth`` gives the same metrics
as testing the training checkpoint. A model whose PDDR layers are all PD-A, and an RPG model (its generated
kernels materialised), also gets ``<config>_plain.py`` and ``<checkpoint>_plain.pth``: the stock mmdet /
mmpretrain model (pddr_mm not needed) computing the same.
"""
import argparse
import math
import os.path as osp

from mmengine.config import Config, DictAction

import pddr_mm  # noqa: F401  (registers the PDDR modules)
from pddr_mm.deployment.checkpoint import ConversionError, convert_checkpoint


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'must be a positive integer, got {text!r}') from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f'must be a positive integer, got {value}')
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'must be a number >= 0, got {text!r}') from None
    if not value >= 0 or math.isinf(value):  # also NaN
        raise argparse.ArgumentTypeError(f'must be a finite number >= 0, got {text}')
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Fuse a PDDR or RPG training checkpoint for deployment')
    parser.add_argument('config', help='training config file')
    parser.add_argument('checkpoint', help='training checkpoint')
    parser.add_argument('--out-dir', help='where to write the deploy config and checkpoint '
                        '(default: the checkpoint\'s directory)')
    parser.add_argument('--check-shape', type=positive_int, nargs=2, default=[64, 64], metavar=('H', 'W'),
                        help='image size of the generated batch on which fused and unfused outputs are compared')
    parser.add_argument('--tolerance', type=non_negative_float, default=1e-3,
                        help='largest allowed relative output error')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override settings of the config')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = Config.fromfile(args.config)
        if args.cfg_options is not None:
            cfg.merge_from_dict(args.cfg_options)
        out_dir = args.out_dir or osp.dirname(osp.abspath(args.checkpoint))
        cfg_path, ckpt_path, info = convert_checkpoint(cfg, args.checkpoint, out_dir, tuple(args.check_shape),
                                                       args.tolerance)
    except (OSError, ValueError, ConversionError) as e:  # the user's files; a failed fusion check still raises
        raise SystemExit(f'reparameterize.py: {e}') from None
    print(f'fused {info["fused_layers"]} {info["kinds"]} layers (fused vs unfused max relative error '
          f'{info["check_error"]:.2e})')
    print(f'deploy config:     {cfg_path}')
    print(f'deploy checkpoint: {ckpt_path}')
    print(f'test it with:      python tools/test.py {cfg_path} {ckpt_path}')
    if 'plain_config' in info:
        print(f'plain config:      {info["plain_config"]} (stock model, no pddr_mm; plain vs fused max relative '
              f'error {info["plain_error"]:.2e})')
        print(f'plain checkpoint:  {info["plain_checkpoint"]}')
        print(f'test it with:      python tools/test.py {info["plain_config"]} {info["plain_checkpoint"]}')
    else:
        print(f'no plain checkpoint: {info["plain_skipped"]}')
    return cfg_path, ckpt_path


if __name__ == '__main__':
    main()
