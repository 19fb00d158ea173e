"""Accuracy, FLOPs and speed of a Dyn-Adapter model at several exit thresholds.

For each ``--thresholds`` value, and for the same model run to its last head (threshold None), the test
set of the config is run once: top-1 and the share of samples per exit (the config's evaluators plus
``ExitMetric``), the mean FLOPs per image (analytic, see ``pddr_mm.dyn_adapter.flops``) and the measured
images per second of the model's forward (data loading and preprocessing are not timed; the first batch
is run once untimed to warm up). Prints a table, writes it as JSON and, if matplotlib is installed, plots
top-1 against FLOPs::

    python tools/analysis_tools/exit_sweep.py CONFIG CKPT --thresholds 0.5 0.7 0.9 0.99

Several checkpoints (e.g. one per seed) are swept one after the other, each with its own table, and then
summarised per threshold as mean ± std over the checkpoints (sample std)::

    python tools/analysis_tools/exit_sweep.py CONFIG seed0/epoch_10.pth seed1/epoch_10.pth seed2/epoch_10.pth
"""
import argparse
import json
import os
import os.path as osp
import statistics
import time
from typing import Dict, List, Optional

import torch
from mmengine.config import Config, DictAction
from mmengine.evaluator import Evaluator
from mmengine.runner import Runner
from mmengine.runner.checkpoint import load_checkpoint

import pddr_mm  # noqa: F401  (registers Dyn-Adapter)
from pddr_mm.deployment.checkpoint import build_model
from pddr_mm.utils.args import positive_int, unit_float
from pddr_mm.utils.runtime import set_cpu_threads

MIN_TIMED_BATCHES = 5  # fewer, and images/s says more about the machine's moment than about the model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='a DynAdapterClassifier config')
    parser.add_argument('checkpoints', nargs='+', metavar='checkpoint',
                        help='its checkpoint (the trained modules; the backbone from its init_cfg); several (e.g. '
                        'one per seed) are summarised as mean ± std')
    parser.add_argument('--thresholds', type=unit_float, nargs='+', default=[0.5, 0.7, 0.9, 0.99],
                        help='exit thresholds on the max softmax probability (default: 0.5 0.7 0.9 0.99)')
    parser.add_argument('--batch-size', type=positive_int, help='test batch size (default: the config\'s)')
    parser.add_argument('--max-batches', type=positive_int, help='use only the first N test batches (quick looks)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--out-dir', help='where the JSON and the plot go (default: '
                        'work_dirs/exit_sweep/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override settings of the config')
    args = parser.parse_args(argv)
    if len(set(args.thresholds)) != len(args.thresholds):
        parser.error(f'argument --thresholds: repeated values in {args.thresholds}')
    return args


def _evaluator(cfg: Config, dataset_meta: dict) -> Evaluator:
    metrics = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
    metrics = [dict(m) for m in metrics]
    if not any(m.get('type') == 'ExitMetric' for m in metrics):
        metrics.append(dict(type='ExitMetric'))
    evaluator = Evaluator(metrics)
    evaluator.dataset_meta = dataset_meta
    return evaluator


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


@torch.no_grad()
def run_threshold(model, loader, evaluator: Evaluator, threshold: Optional[float], device: str,
                  max_batches: Optional[int]) -> Dict[str, float]:
    """One pass over the test set at ``threshold``: the evaluators' metrics and the measured images/s."""
    model.exit_threshold = threshold
    seconds, images, batches = 0., 0, 0
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        data = model.data_preprocessor(batch, False)
        if i == 0:
            model.predict(data['inputs'], data['data_samples'])  # warm-up, not timed
        _sync(device)
        start = time.perf_counter()
        preds = model.predict(data['inputs'], data['data_samples'])
        _sync(device)
        seconds += time.perf_counter() - start
        images += data['inputs'].shape[0]
        batches += 1
        evaluator.process(data_samples=preds, data_batch=batch)
    metrics = evaluator.evaluate(images)
    metrics['images_per_s'] = images / seconds
    metrics['num_images'] = images
    metrics['timed_batches'] = batches
    return metrics


def format_table(rows: List[dict], num_exits: int) -> str:
    head = ['threshold', 'top-1', 'MFLOPs/img', 'FLOPs ratio', 'img/s', 'speed-up'] + [
        f'exit{k}' for k in range(num_exits)]
    base = rows[0]
    lines = [' | '.join(head), ' | '.join('---' for _ in head)]
    for r in rows:
        cells = ['last head' if r['threshold'] is None else f"{r['threshold']:g}", f"{r['top1']:.2f}",
                 f"{r['exit/mflops']:.2f}", f"{r['exit/flops_ratio']:.3f}", f"{r['images_per_s']:.1f}",
                 f"{r['images_per_s'] / base['images_per_s']:.2f}x"]
        cells += [f"{100 * r.get(f'exit/share_exit{k}', 0.):.1f}%" for k in range(num_exits)]
        lines.append(' | '.join(cells))
    return '\n'.join(lines)


SUMMARISED = ('top1', 'exit/mflops', 'exit/flops_ratio', 'images_per_s')


def summarise(runs: List[List[dict]], num_exits: int) -> List[dict]:
    """Per threshold, the mean and sample std (``<key>_std``) of each run's metrics over the checkpoints."""
    keys = SUMMARISED + tuple(f'exit/share_exit{k}' for k in range(num_exits))
    summary = []
    for same in zip(*runs):
        row = dict(threshold=same[0]['threshold'], n=len(same))
        for key in keys:
            values = [r.get(key, 0.) for r in same]
            row[key], row[f'{key}_std'] = statistics.fmean(values), statistics.stdev(values)
        summary.append(row)
    return summary


def format_summary(summary: List[dict], num_exits: int) -> str:
    head = ['threshold', 'top-1', 'MFLOPs/img', 'FLOPs ratio', 'img/s'] + [f'exit{k}' for k in range(num_exits)]
    lines = [f"mean ± std over {summary[0]['n']} checkpoints", ' | '.join(head), ' | '.join('---' for _ in head)]
    for r in summary:
        cells = ['last head' if r['threshold'] is None else f"{r['threshold']:g}",
                 f"{r['top1']:.2f} ± {r['top1_std']:.2f}", f"{r['exit/mflops']:.2f} ± {r['exit/mflops_std']:.2f}",
                 f"{r['exit/flops_ratio']:.3f} ± {r['exit/flops_ratio_std']:.3f}",
                 f"{r['images_per_s']:.1f} ± {r['images_per_s_std']:.1f}"]
        cells += [f"{100 * r[f'exit/share_exit{k}']:.1f}%" for k in range(num_exits)]
        lines.append(' | '.join(cells))
    return '\n'.join(lines)


def plot(rows: List[dict], path: str) -> bool:
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('matplotlib is not installed: no plot (pip install matplotlib)')
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    dyn = [r for r in rows if r['threshold'] is not None]

    def points(rs):  # x, y and their std over checkpoints (0 for one checkpoint)
        return dict(x=[r['exit/mflops'] for r in rs], y=[r['top1'] for r in rs],
                    xerr=[r.get('exit/mflops_std', 0.) for r in rs], yerr=[r.get('top1_std', 0.) for r in rs])

    ax.errorbar(**points(dyn), fmt='o-', capsize=3, label='dynamic exit')
    for r in dyn:
        ax.annotate(f"{r['threshold']:g}", (r['exit/mflops'], r['top1']), textcoords='offset points', xytext=(4, 4))
    ax.errorbar(**points(rows[:1]), fmt='s', capsize=3, label='last head')
    ax.set_xlabel('mean MFLOPs per image')
    ax.set_ylabel('top-1 (%)')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def sweep(cfg: Config, checkpoint: str, thresholds: List[float], device: str,
          max_batches: Optional[int]) -> List[dict]:
    """The model of ``cfg`` with ``checkpoint`` run to its last head and at each threshold: one row each."""
    model = build_model(cfg)
    if not hasattr(model, 'exit_threshold'):
        raise ValueError(f'{cfg.filename} builds a {type(model).__name__}; exit_sweep needs a DynAdapterClassifier')
    load_checkpoint(model, checkpoint, map_location='cpu')
    model.to(device).eval()
    loader = Runner.build_dataloader(cfg.test_dataloader)
    rows = []
    for threshold in [None] + list(thresholds):
        metrics = run_threshold(model, loader, _evaluator(cfg, loader.dataset.metainfo), threshold, device,
                                max_batches)
        metrics['threshold'] = threshold
        metrics['top1'] = metrics.get('accuracy/top1', float('nan'))
        rows.append(metrics)
    print(f'{checkpoint}:')
    print(format_table(rows, model.num_exits))
    if rows[0]['timed_batches'] < MIN_TIMED_BATCHES:
        print(f"img/s from {rows[0]['timed_batches']} batch(es) only: too few to compare speeds "
              f'(use a larger test set or a smaller --batch-size)')
    return rows


def check_files(cfg: Config, config: str, checkpoints: List[str]) -> None:
    """One line naming the file and what to pass, before any model is built: a checkpoint that is not there,
    or a frozen backbone file (the backbone's Pretrained init_cfg) that is not there, which the trained-modules
    checkpoints of a Dyn-Adapter run need."""
    for ckpt in checkpoints:
        if not osp.isfile(ckpt):
            raise SystemExit(f'exit_sweep.py: checkpoint {ckpt} does not exist: pass a checkpoint the training of '
                             f'{config} wrote (its work_dir, e.g. epoch_N.pth)')
    init_cfg = cfg.get('model', {}).get('backbone', {}).get('init_cfg') or []
    for init in init_cfg if isinstance(init_cfg, list) else [init_cfg]:
        path = init.get('checkpoint') if init.get('type') == 'Pretrained' else None
        if isinstance(path, str) and '://' not in path and not osp.isfile(path):
            raise SystemExit(f"exit_sweep.py: the frozen backbone's checkpoint {path} (model.backbone.init_cfg of "
                             f'{config}) does not exist: train or copy it there, or pass --cfg-options '
                             'model.backbone.init_cfg.checkpoint=PATH')


def main(argv=None) -> List[dict]:
    """Returns the rows of the one checkpoint, or the per-threshold summary (mean, ``<key>_std``) of several."""
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.batch_size:
        cfg.test_dataloader.batch_size = args.batch_size
    check_files(cfg, args.config, args.checkpoints)
    set_cpu_threads(cfg.get('cpu_threads', None))
    if cfg.get('data_preprocessor') is not None:  # what the Runner does: the config's normalisation
        cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    # a fresh model per checkpoint: nothing of one checkpoint can leak into the next
    runs = [sweep(cfg, ckpt, args.thresholds, args.device, args.max_batches) for ckpt in args.checkpoints]
    num_exits = sum(k.startswith('exit/share_exit') for k in runs[0][0])
    out_dir = args.out_dir or osp.join('work_dirs', 'exit_sweep', osp.splitext(osp.basename(args.config))[0])
    os.makedirs(out_dir, exist_ok=True)
    if len(runs) == 1:
        rows, record = runs[0], dict(checkpoint=args.checkpoints[0], rows=runs[0])
    else:
        rows = summarise(runs, num_exits)
        print(format_summary(rows, num_exits))
        record = dict(checkpoints=args.checkpoints, runs=runs, summary=rows)
    with open(osp.join(out_dir, 'exit_sweep.json'), 'w') as f:
        json.dump(dict(config=args.config, device=args.device, **record), f, indent=1)
    if plot(rows, osp.join(out_dir, 'exit_sweep.png')):
        print(f'plot: {osp.join(out_dir, "exit_sweep.png")}')
    return rows


if __name__ == '__main__':
    main()
