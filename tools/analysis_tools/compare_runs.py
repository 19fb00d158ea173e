"""Training curves of several work dirs on shared axes: training loss and validation metrics.

    python tools/analysis_tools/compare_runs.py WORK_DIR [WORK_DIR ...] [--labels L ...] [--out compare.png]

Each work dir is read as tools/analysis_tools/plot_curves.py reads one (``<timestamp>/vis_data/scalars.json``
of every run in it). Left: the total training loss per logged iteration; right: the validation metrics
per evaluation, the main one (COCO bbox mAP, or top-1 accuracy) solid and a second one (mAP@50) dashed,
one colour per run. Meant for runs on the same schedule, e.g. the demo's plain and PD-B RetinaNets.
"""
import argparse
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from plot_curves import is_percent, load_scalars  # noqa: E402

# main metric first; the first of these present in a run's validation records is plotted solid
MAIN_METRICS = ('coco/bbox_mAP', 'accuracy/top1', 'single-label/f1-score')
SECOND_METRICS = ('coco/bbox_mAP_50', 'accuracy/top5')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Plot the training curves of several work dirs on shared axes')
    parser.add_argument('work_dirs', nargs='+', help='work dirs of tools/train.py')
    parser.add_argument('--labels', nargs='+', help='one label per work dir (default: the work dir names)')
    parser.add_argument('--out', default='compare.png', help='PNG to write (default: compare.png)')
    return parser.parse_args(argv)


def pick(keys: Sequence[str], candidates: Sequence[str]) -> Optional[str]:
    return next((k for k in candidates if k in keys), None)


def metric_keys(runs: Dict[str, tuple]) -> List[str]:
    """The main and the second validation metric, taken from the runs' validation records."""
    keys = {k for _, val in runs.values() for r in val for k in r}
    return [k for k in (pick(keys, MAIN_METRICS), pick(keys, SECOND_METRICS)) if k]


def plot_compare(runs: Dict[str, tuple], out: str) -> List[str]:
    """Draw ``runs`` ({label: (train records, val records)}) into ``out``; returns the metrics drawn."""
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(12, 4.4))
    colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
    metrics = metric_keys(runs)
    percent = is_percent(metrics)
    top = 0.0
    for i, (label, (train, val)) in enumerate(runs.items()):
        c = colours[i % len(colours)]
        ax_loss.plot([r['step'] for r in train], [r['loss'] for r in train], color=c, lw=1.3, label=label)
        for key, style in zip(metrics, ('-', '--')):
            points = [(r['step'], r[key]) for r in val if isinstance(r.get(key), (int, float)) and r[key] >= 0]
            if points:
                top = max(top, max(v for _, v in points))
                ax_val.plot(*zip(*points), style, marker='o', ms=4, color=c, label=f'{label}: {key.split("/")[-1]}')
    ax_loss.set(title='training loss (total)', xlabel='iteration', ylabel='loss')
    ax_loss.set_yscale('log')  # plain numbers on the ticks, not powers of ten
    ax_loss.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f'{v:g}'))
    ax_loss.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f'{v:g}'))
    ax_val.set(title='validation', xlabel='epoch (or iteration) of the evaluation',
               ylabel='%' if percent else 'COCO metric', ylim=(0, min(100 if percent else 1, 1.15 * top) or 1))
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3, which='both')
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if not metrics:
        ax_val.text(0.5, 0.5, 'no validation records', ha='center', transform=ax_val.transAxes)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return metrics


def default_labels(work_dirs: List[str]) -> List[str]:
    """The work dirs' names, with as many parent folders as it takes to tell them apart
    (``.../plain/seed0`` and ``.../pd-b/seed0`` -> ``plain/seed0``, ``pd-b/seed0``)."""
    parts = [osp.normpath(osp.abspath(w)).split(os.sep) for w in work_dirs]
    for n in range(1, max(len(p) for p in parts) + 1):
        labels = ['/'.join(p[-n:]) for p in parts]
        if len(set(labels)) == len(labels):
            break
    return labels


def main(argv=None) -> None:
    args = parse_args(argv)
    labels = args.labels or default_labels(args.work_dirs)
    if len(labels) != len(args.work_dirs):
        raise SystemExit(f'{len(labels)} labels for {len(args.work_dirs)} work dirs')
    if len(set(labels)) != len(labels):  # one label per run: a repeated one would hide a run
        raise SystemExit(f'labels {labels} repeat: give one distinct label per work dir with --labels')
    runs = {label: load_scalars(w) for label, w in zip(labels, args.work_dirs)}
    metrics = plot_compare(runs, args.out)
    for label, (train, val) in runs.items():
        print(f'{label}: {len(train)} logged iterations, {len(val)} evaluations')
    print(f'curves ({", ".join(["loss"] + metrics)}): {args.out}')


if __name__ == '__main__':
    main()
