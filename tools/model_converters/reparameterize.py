"""Convert a PDDR training checkpoint into a deploy (fused) checkpoint and write the matching deploy config.

    python tools/model_converters/reparameterize.py CONFIG CHECKPOINT [--out-dir DIR]

then ``python tools/test.py DIR/<config>_deploy.py DIR/<checkpoint>_deploy.pth`` gives the same metrics
as testing the training checkpoint.
"""
import argparse
import os.path as osp

from mmengine.config import Config, DictAction

import pddr_mm  # noqa: F401  (registers the PDDR modules)
from pddr_mm.deployment.checkpoint import convert_checkpoint


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Fuse a PDDR training checkpoint for deployment')
    parser.add_argument('config', help='training config file')
    parser.add_argument('checkpoint', help='training checkpoint')
    parser.add_argument('--out-dir', help='where to write the deploy config and checkpoint '
                        '(default: the checkpoint\'s directory)')
    parser.add_argument('--check-shape', type=int, nargs=2, default=[64, 64], metavar=('H', 'W'),
                        help='image size of the generated batch on which fused and unfused outputs are compared')
    parser.add_argument('--tolerance', type=float, default=1e-3, help='largest allowed relative output error')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override settings of the config')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    out_dir = args.out_dir or osp.dirname(osp.abspath(args.checkpoint))
    cfg_path, ckpt_path, info = convert_checkpoint(cfg, args.checkpoint, out_dir, tuple(args.check_shape),
                                                   args.tolerance)
    print(f'fused {info["fused_layers"]} PDConv2d layers (fused vs unfused max relative error '
          f'{info["check_error"]:.2e})')
    print(f'deploy config:     {cfg_path}')
    print(f'deploy checkpoint: {ckpt_path}')
    print(f'test it with:      python tools/test.py {cfg_path} {ckpt_path}')
    return cfg_path, ckpt_path


if __name__ == '__main__':
    main()
