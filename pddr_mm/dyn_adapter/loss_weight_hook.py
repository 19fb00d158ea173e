"""Adaptive prioritization: per-exit loss weights that change over training.

The paper weights the early heads up, then down, over training; the schedule below is our reading:
a linear warm-up from ``end_weights`` to ``start_weights`` over the first ``warmup_ratio`` of the
iterations (the early heads gain weight), then a cosine back to ``end_weights`` (they give way to the
deep heads). ``warmup_ratio=0`` keeps only the decay.
"""
import math
from typing import List, Optional, Sequence

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS


def exit_loss_weights(progress: float, start: Sequence[float], end: Sequence[float],
                      warmup_ratio: float) -> List[float]:
    """The weights at ``progress`` (0 at the first iteration, 1 at the end of training)."""
    progress = min(max(progress, 0.), 1.)
    if progress < warmup_ratio:
        t = progress / warmup_ratio  # 0 -> 1: end -> start
    else:
        t = 0.5 * (1 + math.cos(math.pi * (progress - warmup_ratio) / (1 - warmup_ratio)))  # 1 -> 0
    return [e + (s - e) * t for s, e in zip(start, end)]


@HOOKS.register_module()
class ExitLossWeightHook(Hook):
    """Sets ``DynAdapterClassifier.loss_weights`` before every training iteration and logs them as
    ``exit_weight{k}``.

    Args:
        start_weights (Sequence[float], optional): the weights at the top of the schedule. Defaults to 1
            for every exit.
        end_weights (Sequence[float], optional): the weights at both ends. Defaults to a line from
            ``min_end_weight`` at the first exit to 1 at the last.
        min_end_weight (float): see ``end_weights``. Defaults to 0.3.
        warmup_ratio (float): share of the iterations spent weighting the early heads up. Defaults to 0.1.
    """

    priority = 'NORMAL'

    def __init__(self, start_weights: Optional[Sequence[float]] = None, end_weights: Optional[Sequence[float]] = None,
                 min_end_weight: float = 0.3, warmup_ratio: float = 0.1):
        if not 0. <= warmup_ratio < 1.:
            raise ValueError(f'ExitLossWeightHook warmup_ratio must be in [0, 1), got {warmup_ratio}')
        if min_end_weight < 0:
            raise ValueError(f'ExitLossWeightHook min_end_weight must be >= 0, got {min_end_weight}')
        self.start_weights, self.end_weights = start_weights, end_weights
        self.min_end_weight, self.warmup_ratio = min_end_weight, warmup_ratio

    def _weights(self, num_exits: int):
        start = list(self.start_weights) if self.start_weights is not None else [1.] * num_exits
        if self.end_weights is not None:
            end = list(self.end_weights)
        elif num_exits == 1:
            end = [1.]
        else:
            end = [self.min_end_weight + (1 - self.min_end_weight) * k / (num_exits - 1) for k in range(num_exits)]
        for name, w in (('start_weights', start), ('end_weights', end)):
            if len(w) != num_exits:
                raise ValueError(f'ExitLossWeightHook {name} has {len(w)} values for {num_exits} exits')
        return start, end

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'loss_weights') or not hasattr(model, 'num_exits'):
            raise ValueError(f'ExitLossWeightHook needs a DynAdapterClassifier, got {type(model).__name__}')
        self._start, self._end = self._weights(model.num_exits)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        weights = exit_loss_weights(runner.iter / max(runner.max_iters, 1), self._start, self._end,
                                    self.warmup_ratio)
        model.loss_weights = weights
        for k, w in enumerate(weights):
            runner.message_hub.update_scalar(f'train/exit_weight{k}', w)
