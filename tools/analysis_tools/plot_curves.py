"""Plot a work dir's training curves and, for PD-B models, the refinement modules' branch weights.

    python tools/analysis_tools/plot_curves.py WORK_DIR [--config CFG --checkpoint CKPT] [--out curves.png]

The curves (losses per iteration, learning rate, val metrics per evaluation) come from mmengine's
``<WORK_DIR>/<timestamp>/vis_data/scalars.json`` (all runs of the work dir, so a resumed run continues
the curve). With ``--config`` and ``--checkpoint`` the model is run on a batch of val images and the
softmax weights every PD-B refinement module gives its branches are collected with forward hooks, then
drawn per backbone stage (``<out>_branch_weights.png``): how much each branch is used, and how much that
varies between samples, which is what PD-B adds over PD-A.
"""
import argparse
import glob
import json
import os.path as osp
import re
from collections import OrderedDict, defaultdict
from typing import Dict, List, Optional, Tuple

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Plot training curves and PD-B branch weights of a work dir')
    parser.add_argument('work_dir', help='work dir of tools/train.py (holds <timestamp>/vis_data/scalars.json)')
    parser.add_argument('--config', help='config of the model, to plot its PD-B branch weights')
    parser.add_argument('--checkpoint', help='checkpoint to load for the branch weights')
    parser.add_argument('--out', help='curves PNG (default: <work_dir>/curves.png); the branch weights go to '
                        '<out stem>_branch_weights.png')
    parser.add_argument('--num-images', type=int, default=32, help='val images to collect weights on (default 32)')
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------- curves
def is_percent(metric_keys) -> bool:
    """mmpretrain's accuracies are percentages (0-100); mmdet's COCO metrics are fractions (0-1)."""
    return any(k.startswith(('accuracy/', 'single-label/')) for k in metric_keys)


def load_scalars(work_dir: str) -> Tuple[List[Dict], List[Dict]]:
    """Training records (with 'loss') and validation records (with a metric) of every run of ``work_dir``."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        raise FileNotFoundError(f'no <timestamp>/vis_data/scalars.json under {work_dir}: is it a training work dir?')
    train, val = {}, {}
    for path in files:  # later runs (a resume) overwrite the steps they repeat
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                if 'loss' in rec:
                    train[rec['step']] = rec
                elif any('/' in k for k in rec):  # e.g. coco/bbox_mAP, accuracy/top1
                    val[rec['step']] = rec
    return [train[k] for k in sorted(train)], [val[k] for k in sorted(val)]


def plot_curves(train: List[Dict], val: List[Dict], out: str) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    steps = [r['step'] for r in train]
    loss_keys = [k for k in train[0] if k.startswith('loss')] if train else []
    for k in loss_keys:
        axes[0].plot(steps, [r.get(k, np.nan) for r in train], label=k, lw=1.5 if k == 'loss' else 1)
    axes[0].set(title='training loss', xlabel='iteration', ylabel='loss')
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    axes[1].plot(steps, [r.get('lr', np.nan) for r in train], color='tab:purple')
    axes[1].set(title='learning rate', xlabel='iteration')
    temps = [(r['step'], r['pddr_temperature']) for r in train if 'pddr_temperature' in r]
    if temps:  # PDDRTemperatureHook: the annealed refinement softmax temperature, on its own scale
        ax_t = axes[1].twinx()
        ax_t.plot(*zip(*temps), color='tab:orange', label='PD-B temperature')
        ax_t.set_ylabel('PD-B refinement temperature', color='tab:orange')
        axes[1].set_title('learning rate and PD-B temperature')
    axes[1].ticklabel_format(axis='y', style='sci', scilimits=(-2, 2))
    axes[1].grid(alpha=0.3)
    metric_keys = [k for k in (val[0] if val else {}) if '/' in k and not k.endswith('_precision')]
    for k in metric_keys:
        vals = [r.get(k, np.nan) for r in val]
        if all(isinstance(v, (int, float)) and v >= 0 for v in vals):  # COCO writes -1 for empty size ranges
            axes[2].plot([r['step'] for r in val], vals, marker='o', label=k.split('/')[-1])
    axes[2].set(title='validation (per evaluation)', xlabel='epoch (or iteration)',
                ylim=(0, 100 if is_percent(metric_keys) else 1))
    if metric_keys:
        axes[2].legend(fontsize=8, ncol=2)
    else:
        axes[2].text(0.5, 0.5, 'no validation yet', ha='center', transform=axes[2].transAxes)
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- weights
def collect_branch_weights(config: str, checkpoint: Optional[str], num_images: int) -> 'OrderedDict':
    """Per stage, (branch names, weights (samples x layers, branches)) from the PD-B refinement modules."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner, load_checkpoint

    import pddr_mm  # noqa: F401  (registers the modules)
    from pddr_mm.ops import PDConv2d

    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    from mmengine.registry import MODELS
    model = MODELS.build(cfg.model)
    if checkpoint:
        load_checkpoint(model, checkpoint, map_location='cpu', logger='silent')
    model.eval()
    records = defaultdict(list)
    names: Dict[str, Tuple[str, ...]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, PDConv2d) and module.mode == 'B':
            match = re.search(r'layer(\d+)', name)
            stage = f'stage {match.group(1)}' if match else name.rsplit('.', 1)[0]
            names[stage] = module.branch_names
            hooks.append(module.refinement.register_forward_hook(
                lambda mod, inp, out, stage=stage: records[stage].append(out.detach().cpu())))
    if not hooks:
        return OrderedDict()
    loader_cfg = cfg.get('val_dataloader') or cfg.get('test_dataloader')
    loader_cfg = dict(loader_cfg, batch_size=min(num_images, 16), num_workers=0, persistent_workers=False)
    loader = Runner.build_dataloader(loader_cfg)
    seen = 0
    with torch.no_grad():
        for data in loader:
            model.test_step(data)
            seen += len(data['inputs'])
            if seen >= num_images:
                break
    for h in hooks:
        h.remove()
    return OrderedDict((s, (names[s], torch.cat(records[s]).numpy())) for s in sorted(records))


def plot_branch_weights(weights: 'OrderedDict', out: str) -> None:
    n = len(weights)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 0.6, 3.8), sharey=True, squeeze=False)
    for ax, (stage, (branch_names, w)) in zip(axes[0], weights.items()):
        labels = [f'{b}\n#{i}' if branch_names.count(b) > 1 else b for i, b in enumerate(branch_names)]
        ax.boxplot([w[:, i] for i in range(w.shape[1])], showfliers=False)
        jitter = np.random.default_rng(0).uniform(-0.12, 0.12, w.shape[0])
        for i in range(w.shape[1]):
            ax.scatter(i + 1 + jitter, w[:, i], s=4, alpha=0.25, color='tab:blue')
        ax.axhline(1 / w.shape[1], color='grey', ls='--', lw=0.8)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
        ax.set_title(f'{stage} ({w.shape[0]} sample x layer)', fontsize=10)
        ax.grid(axis='y', alpha=0.3)
    axes[0][0].set_ylabel('refinement softmax weight')
    fig.suptitle('PD-B branch weights per stage (dashed: uniform)', fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    out = args.out or osp.join(args.work_dir, 'curves.png')
    train, val = load_scalars(args.work_dir)
    plot_curves(train, val, out)
    print(f'training curves ({len(train)} logged iterations, {len(val)} evaluations): {out}')
    if args.config:
        weights = collect_branch_weights(args.config, args.checkpoint, args.num_images)
        if weights:
            wout = osp.splitext(out)[0] + '_branch_weights.png'
            plot_branch_weights(weights, wout)
            print(f'PD-B branch weights ({", ".join(weights)}): {wout}')
        else:
            print('no PD-B layer in the model: no branch-weight plot')


if __name__ == '__main__':
    main()
