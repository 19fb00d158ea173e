"""``ExitMetric``: where the samples left and what they cost."""
from typing import Dict, List, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmpretrain.registry import METRICS


@METRICS.register_module()
class ExitMetric(BaseMetric):
    """Share of the samples per exit, top-1 among each exit's samples, and mean FLOPs per image.

    Reads the ``exit_index``, ``flops`` and ``full_flops`` fields that ``DynAdapterClassifier`` puts on its
    predictions (FLOPs: analytic, one multiply-add = one FLOP, see ``pddr_mm.dyn_adapter.flops``). Keys:
    ``share_exit{k}``, ``top1_exit{k}`` (nan where no sample left there), ``mflops`` (mean per image, in
    millions), ``flops_ratio`` (against the same model run to its last head, without early heads). Use it
    next to mmpretrain's ``Accuracy`` for the overall top-1.

    Args:
        num_exits (int, optional): report every exit up to this many, also those nobody took; None: up to
            the deepest exit seen.
    """
    default_prefix = 'exit'

    def __init__(self, num_exits=None, collect_device: str = 'cpu', prefix=None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        if num_exits is not None and num_exits < 1:
            raise ValueError(f'ExitMetric num_exits must be >= 1, got {num_exits}')
        self.num_exits = num_exits

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            if 'exit_index' not in sample:
                raise ValueError('ExitMetric needs predictions with exit_index (a DynAdapterClassifier)')
            correct = None
            if 'gt_label' in sample:
                correct = bool(int(sample['pred_label'][0]) == int(sample['gt_label'][0]))
            self.results.append((int(sample['exit_index']), float(sample['flops']), float(sample['full_flops']),
                                 correct))

    def compute_metrics(self, results: List) -> Dict[str, float]:
        exits = np.array([r[0] for r in results])
        flops = np.array([r[1] for r in results])
        num_exits = self.num_exits or int(exits.max()) + 1
        metrics = {}
        for k in range(num_exits):
            taken = exits == k
            metrics[f'share_exit{k}'] = float(taken.mean())
            correct = [r[3] for r, t in zip(results, taken) if t and r[3] is not None]
            metrics[f'top1_exit{k}'] = 100. * float(np.mean(correct)) if correct else float('nan')
        metrics['mflops'] = float(flops.mean()) / 1e6
        metrics['flops_ratio'] = float(flops.mean() / np.mean([r[2] for r in results]))
        return metrics
