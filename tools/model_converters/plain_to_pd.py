"""Convert a plain ResNet checkpoint into a PD-ResNet (PDDR) checkpoint that computes the same function.

Every 3x3 conv of the residual blocks (with its BN) becomes the state of an equivalent PDConv2d
(``pddr_mm.models.plain_to_pd``, the same mapping PDResNet and PDDRBackbone apply when it loads plain
weights through ``init_cfg=dict(type='Pretrained', ...)``). Works with torchvision naming
(``layer1.0.conv2.weight``) and OpenMMLab naming (``backbone.layer1.0.conv2.weight``).

Example::

    python tools/model_converters/plain_to_pd.py resnet50.pth pd-b-resnet50.pth --mode B
"""
import argparse
from collections import OrderedDict

import torch
from mmengine.runner import CheckpointLoader

from pddr_mm.deployment.checkpoint import ConversionError, read_checkpoint
from pddr_mm.models.plain_to_pd import find_block_convs, plain_to_pd_layer
from pddr_mm.ops import DEFAULT_BRANCHES, PDArgs


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Convert a plain ResNet checkpoint to PDDR (PD-ResNet) keys')
    parser.add_argument('src', help='plain checkpoint path (or URL / torchvision:// name mmengine can load)')
    parser.add_argument('dst', help='where to save the PDDR checkpoint')
    parser.add_argument('--mode', choices=['A', 'B'], default='A', help='PD-A (sum) or PD-B (refined mix)')
    parser.add_argument('--branches', nargs='+', default=list(DEFAULT_BRANCHES),
                        help='branches of every PDConv2d, as in the config (default: %(default)s)')
    parser.add_argument('--branch-groups', type=int, default=64, help="groups of the 'group' branch")
    parser.add_argument('--reduction', type=int, default=16, help='refinement module reduction (PD-B)')
    parser.add_argument('--seed', type=int, default=0, help='seed for the kernels that carry no plain weights')
    return parser.parse_args(argv)


def load_plain(src: str) -> dict:
    """The plain checkpoint's dict; a clear exit where it cannot be read or is already PDDR."""
    try:
        checkpoint = (CheckpointLoader.load_checkpoint(src, map_location='cpu') if '://' in src else
                      read_checkpoint(src))
    except (OSError, ConversionError) as e:
        raise SystemExit(f'plain_to_pd.py: {e}') from None
    pddr_key = next((k for k in checkpoint.get('state_dict', checkpoint) if '.branches.' in k), None)
    if pddr_key is not None:
        raise SystemExit(f'plain_to_pd.py: {src} is already a PDDR checkpoint (it holds branch weights, e.g. '
                         f'{pddr_key}): there is nothing to convert. Load it with its PDDR config (load_from), or '
                         'pass the plain checkpoint it was made from.')
    return checkpoint


def convert(state_dict: dict, pairs: list, args: argparse.Namespace) -> dict:
    """``state_dict`` with every (conv, BN) pair in PDConv2d form; a clear exit naming the flag and layer
    that do not fit."""
    converted = dict(state_dict)
    try:
        pd = PDArgs(mode=args.mode, branches=tuple(args.branches), branch_groups=args.branch_groups,
                    reduction=args.reduction)
    except ValueError as e:
        raise SystemExit(f'plain_to_pd.py: {e}') from None
    for i, (conv_prefix, norm_prefix) in enumerate(pairs):
        try:
            plain_to_pd_layer(converted, conv_prefix, norm_prefix, pd, seed=args.seed + i)
        except (ValueError, KeyError) as e:
            flag = (f'--branch-groups {args.branch_groups}' if 'branch_groups' in str(e) else
                    f'--branches {" ".join(args.branches)}')
            raise SystemExit(f'plain_to_pd.py: {flag} does not fit layer {conv_prefix[:-1]}: '
                             f'{e.args[0] if e.args else e}') from None
    return converted


def main(argv=None) -> None:
    args = parse_args(argv)
    checkpoint = load_plain(args.src)
    state_dict = checkpoint.get('state_dict', checkpoint)
    pairs = find_block_convs(state_dict)
    if not pairs:
        raise SystemExit(f'no residual-block 3x3 conv (layerI.J.convK.weight) found in {args.src}')
    converted = convert(state_dict, pairs, args)
    meta = dict(checkpoint.get('meta', {}) if isinstance(checkpoint.get('meta'), dict) else {})
    meta['pddr_plain_to_pd'] = dict(src=args.src, mode=args.mode, branches=list(args.branches),
                                    branch_groups=args.branch_groups, reduction=args.reduction)
    torch.save(dict(state_dict=OrderedDict(converted), meta=meta), args.dst)
    print(f'converted {len(pairs)} convs to PD-{args.mode} ({", ".join(args.branches)}); saved {args.dst}')


if __name__ == '__main__':
    main()
