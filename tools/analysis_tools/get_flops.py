"""FLOPs and parameters of a (PDDR) model, as mmdet's / mmpretrain's tools/analysis_tools/get_flops.py.

Counted by mmengine.analysis.get_model_complexity_info on the forward in mode='tensor' of one generated,
preprocessed image. Without --deploy the PDDR layers are counted branch by branch (the training
structure); with --deploy after fusion (the deployed model).
"""
import argparse

import torch
from mmengine.analysis import get_model_complexity_info
from mmengine.config import Config, DictAction

import pddr_mm  # noqa: F401  (registers the PDDR modules)
from pddr_mm.deployment.benchmark import default_shape
from pddr_mm.deployment.checkpoint import build_model
from pddr_mm.deployment.inputs import make_inputs
from pddr_mm.deployment.models import TensorMode, pd_layers, set_forward_path
from pddr_mm.ops import is_deployed, switch_to_deploy
from pddr_mm.utils.args import ImageShape, positive_int


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=positive_int, nargs='+', action=ImageShape, metavar='SIZE',
                        help='input size: H W, or one number for a square (default 800x1333 for detectors, '
                        '224x224 for classifiers)')
    parser.add_argument('--deploy', action='store_true', help='count the fused (deployed) model')
    parser.add_argument('--show-table', action='store_true', help='print the per-module table')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override settings of the config')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    model = build_model(cfg).eval()
    if args.deploy:
        switch_to_deploy(model)
    else:
        set_forward_path(model, 'branches')  # in eval mode 'auto' would run (and count) the fused kernels
    shape = args.shape or default_shape(model)
    data = make_inputs(model, 1, shape)
    with torch.no_grad():
        info = get_model_complexity_info(TensorMode(model, data['data_samples']), inputs=(data['inputs'], ),
                                         show_table=args.show_table, show_arch=False)
    form = 'deployed (fused)' if is_deployed(model) else ('unfused (branches)' if pd_layers(model) else 'plain')
    split = '=' * 30
    if args.show_table:
        print(info['out_table'])
    print(f'{split}\nModel: {form}, {len(pd_layers(model))} PDConv2d\n'
          f'Input shape: {tuple(data["inputs"].shape[1:])}\nFlops: {info["flops_str"]}\nParams: {info["params_str"]}\n'
          f'{split}')
    print('!!!Please be cautious if you use the results in papers. FLOPs are counted by mmengine\'s FlopAnalyzer '
          '(one multiply-add = 1 FLOP) on the forward in tensor mode; post-processing is not included.')
    return info


if __name__ == '__main__':
    main()
