"""Hooks the pipeline tests put into real runs (imported by their configs through ``custom_imports``)."""
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module(force=True)
class DumpRankParamsHook(Hook):
    """Save every rank's parameters before and after training, to compare the ranks' models."""

    priority = 'LOWEST'

    def _dump(self, runner, tag: str) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        params = {k: v.detach().cpu().clone() for k, v in model.named_parameters()}
        torch.save(params, osp.join(runner.work_dir, f'params_{tag}_rank{get_rank()}.pth'))

    def before_train(self, runner) -> None:
        self._dump(runner, 'before')

    def after_train(self, runner) -> None:
        self._dump(runner, 'after')


class SimulatedInterruption(RuntimeError):
    pass


@HOOKS.register_module(force=True)
class InterruptAtIterHook(Hook):
    """Stop a run by raising after iteration ``stop_at`` (after CheckpointHook saved it)."""

    priority = 'LOWEST'  # after CheckpointHook (VERY_LOW)

    def __init__(self, stop_at: int) -> None:
        self.stop_at = stop_at

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.stop_at:
            raise SimulatedInterruption(f'interrupted after iteration {self.stop_at}')
