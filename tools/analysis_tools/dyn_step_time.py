"""Training step time of a Dyn-Adapter model against full fine-tuning of the same model and batch.

Both rows are the config's ``DynAdapterClassifier`` on one batch of random images and labels: as
configured (frozen backbone: only adapters and heads get gradients) and with every backbone parameter
made trainable (full fine-tuning of the same network, same loss over every head). A step is forward,
backward and the config's optimizer step (``optim_wrapper.update_params``). The two rows are timed in
turns, so drifts of a shared machine hit both; the ratio is the median of the per-turn ratios, with its
p10-p90 range. Issue 23's target: ratio <= 0.70 on the CPU::

    python tools/analysis_tools/dyn_step_time.py configs/dyn_adapter/dyn-adapter_vit-tiny-p4_shapes-cls-hard.py \
        --batch-size 64 --repeat-num 20
"""
import argparse
import json
import statistics
import time

import torch
from mmengine.config import Config, DictAction
from mmengine.optim import build_optim_wrapper
from mmpretrain.structures import DataSample

import pddr_mm  # noqa: F401  (registers Dyn-Adapter)
from pddr_mm.deployment.checkpoint import build_model
from pddr_mm.utils.args import non_negative_int, positive_int
from pddr_mm.utils.runtime import set_cpu_threads


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='a DynAdapterClassifier config')
    parser.add_argument('--batch-size', type=positive_int, default=64)
    parser.add_argument('--repeat-num', type=positive_int, default=20, help='timed steps of each row')
    parser.add_argument('--num-warmup', type=non_negative_int, default=3, help='untimed steps of each row first')
    parser.add_argument('--threads', type=positive_int, help='torch intra-op threads (default: the config\'s '
                        'cpu_threads, else the cores)')
    parser.add_argument('--json', help='write the figures to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override settings of the config')
    return parser.parse_args(argv)


def _row(cfg: Config, full_finetune: bool):
    model = build_model(cfg)
    if not hasattr(model, 'exit_indices'):
        raise ValueError(f'the config builds a {type(model).__name__}; dyn_step_time needs a DynAdapterClassifier')
    if full_finetune:
        for p in model.backbone.parameters():
            p.requires_grad = True
    model.train()
    return model, build_optim_wrapper(model, cfg.optim_wrapper)


def _step(model, wrapper, inputs, samples) -> float:
    start = time.perf_counter()
    losses = model(inputs, samples, mode='loss')
    wrapper.update_params(sum(losses.values()))
    return time.perf_counter() - start


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.model.backbone.pop('init_cfg', None)  # timing needs no pretrained weights
    threads = set_cpu_threads(args.threads or cfg.get('cpu_threads', None))
    rows = dict(dyn_adapter=_row(cfg, False), full_finetune=_row(cfg, True))
    model = rows['dyn_adapter'][0]
    size = model.backbone.img_size
    num_classes = model.heads[-1].fc.out_features
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(args.batch_size, 3, *size, generator=generator)
    labels = torch.randint(num_classes, (args.batch_size, ), generator=generator)
    samples = [DataSample().set_gt_label(int(y)) for y in labels]
    times = {name: [] for name in rows}
    for i in range(args.num_warmup + args.repeat_num):
        for name, (m, wrapper) in rows.items():
            t = _step(m, wrapper, inputs, samples)
            if i >= args.num_warmup:
                times[name].append(t)
    ratios = sorted(a / b for a, b in zip(times['dyn_adapter'], times['full_finetune']))
    deciles = statistics.quantiles(ratios, n=10) if len(ratios) > 1 else [ratios[0]] * 9
    result = dict(
        config=args.config, batch_size=args.batch_size, threads=threads, repeat_num=args.repeat_num,
        median_s={name: statistics.median(t) for name, t in times.items()},
        ratio_median=statistics.median(ratios), ratio_p10=deciles[0], ratio_p90=deciles[-1],
        trainable={name: sum(p.numel() for p in m.parameters() if p.requires_grad) for name, (m, _) in rows.items()})
    print(f"training step, batch {args.batch_size}, {threads} threads, {args.repeat_num} steps per row:\n"
          f"  Dyn-Adapter    {1e3 * result['median_s']['dyn_adapter']:.1f} ms  "
          f"({result['trainable']['dyn_adapter']} trainable)\n"
          f"  full fine-tune {1e3 * result['median_s']['full_finetune']:.1f} ms  "
          f"({result['trainable']['full_finetune']} trainable)\n"
          f"  ratio {result['ratio_median']:.3f} (p10-p90 {result['ratio_p10']:.3f}-{result['ratio_p90']:.3f}); "
          'issue 23 target <= 0.70')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == '__main__':
    main()
