"""FLOPs and parameters of a (PDDR) model, as mmdet's / mmpretrain's tools/analysis_tools/get_flops.py.

Counted by mmengine.analysis.get_model_complexity_info on the forward in mode='tensor' of one generated,
preprocessed image. Without --deploy the PDDR layers are counted branch by branch (the training
structure) and RPG layers as the ring model; with --deploy after fusion (the deployed model). For a
PDDR or RPG model the trainable parameters (the degrees of freedom: an RPG model's ring plus the layers
it left plain) are printed beside the deployed model's and the plain baseline's parameters.
"""
import argparse
from collections import Counter

import torch
from mmengine.analysis import get_model_complexity_info
from mmengine.config import Config, DictAction

import pddr_mm  # noqa: F401  (registers the PDDR modules)
from pddr_mm.deployment.benchmark import default_shape
from pddr_mm.deployment.checkpoint import build_model
from pddr_mm.deployment.configs import to_plain_config
from pddr_mm.deployment.inputs import make_inputs
from pddr_mm.deployment.models import (TensorMode, count_params, count_trainable, format_count, fused_copy,
                                       set_forward_path)
from pddr_mm.ops import PDConv2d, deploy_layers, is_deployed, switch_to_deploy
from pddr_mm.rpg import RPGConv2d
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
    layers = Counter(type(m).__name__ for m in model.modules() if isinstance(m, (PDConv2d, RPGConv2d)))
    dof = None
    if deploy_layers(model):  # degrees of freedom of the training form, against the deployed and plain models
        dof = (count_trainable(model), count_params(fused_copy(model)[0]),
               count_params(build_model(to_plain_config(cfg))))
    if args.deploy:
        switch_to_deploy(model)
    else:
        set_forward_path(model, 'branches')  # in eval mode 'auto' would run (and count) the fused kernels
    shape = args.shape or default_shape(model)
    data = make_inputs(model, 1, shape)
    with torch.no_grad():
        info = get_model_complexity_info(TensorMode(model, data['data_samples']), inputs=(data['inputs'], ),
                                         show_table=args.show_table, show_arch=False)
    if is_deployed(model) or (args.deploy and layers):
        form = 'deployed (fused)'
    elif layers:
        form = f"unfused ({', '.join(w for k, w in (('PDConv2d', 'branches'), ('RPGConv2d', 'ring')) if k in layers)})"
    else:
        form = 'plain'
    form += ''.join(f', {n} {kind}' for kind, n in sorted(layers.items()))
    split = '=' * 30
    if args.show_table:
        print(info['out_table'])
    print(f'{split}\nModel: {form}\n'
          f'Input shape: {tuple(data["inputs"].shape[1:])}\nFlops: {info["flops_str"]}\nParams: {info["params_str"]}')
    if dof:
        print(f'Trainable params (training form): {format_count(dof[0])}; deployed: {format_count(dof[1])}; plain '
              f'baseline: {format_count(dof[2])}')
        info['trainable_params'], info['deployed_params'], info['plain_params'] = dof
    print(split)
    print('!!!Please be cautious if you use the results in papers. FLOPs are counted by mmengine\'s FlopAnalyzer '
          '(one multiply-add = 1 FLOP) on the forward in tensor mode; post-processing is not included.')
    return info


if __name__ == '__main__':
    main()
