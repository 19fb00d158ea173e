"""PDDRDeployHook: evaluate the deployed (fused) model, checked against the unfused one."""
from typing import Any, Optional

import torch
from mmengine.hooks import EMAHook, Hook
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel
from mmengine.registry import HOOKS

from pddr_mm.deployment.models import (compare_outputs, count_flops, count_params, deploy_kinds, format_count,
                                       forward_path, pd_layers, tensor_forward, unwrap)
from pddr_mm.ops import deploy_layers, is_deployed, switch_to_deploy


@HOOKS.register_module()
class PDDRDeployHook(Hook):
    """Fuse every PDDR layer (and materialise every RPG layer) before testing, after the checkpoint is loaded,
    and check the fusion.

    Test: the runner's model is fused in place before the first test batch (the checkpoint is loaded by
    then, and an EMAHook has swapped the EMA weights in: those are the ones fused). Its network output
    (``mode='tensor'``) on that batch is computed branch by branch first and compared with the fused
    output; a relative error above ``tolerance`` raises, so a broken fusion never produces silently wrong
    metrics. Parameters and FLOPs (mmengine's FlopAnalyzer, on the first batch's shape) before and after
    fusion are logged. No copy of the model is made (on a GPU it would double its memory).

    Training: the training model is never changed. With ``fuse_val=True`` each validation runs its PDDR
    layers through their fused kernels (``forward_path='fused'``: the deploy form's computation, built on
    the fly), so the logged accuracy is the deployed one; no copy of the model is made.

    Args:
        fuse_test: fuse the model before testing.
        fuse_val: validate a fused copy of the model.
        check_outputs: compare fused against unfused outputs on the first test batch.
        tolerance: largest allowed ``max |fused - unfused| / max |unfused|`` over the network outputs.
        log_complexity: log parameters and FLOPs before and after fusion.
    """

    priority = 'LOW'  # after EMAHook (NORMAL) has swapped its weights in

    def __init__(self,
                 fuse_test: bool = True,
                 fuse_val: bool = False,
                 check_outputs: bool = True,
                 tolerance: float = 1e-3,
                 log_complexity: bool = True) -> None:
        self.fuse_test, self.fuse_val = fuse_test, fuse_val
        self.check_outputs, self.tolerance, self.log_complexity = check_outputs, tolerance, log_complexity
        self._params_before = None
        self._first_batch = False
        self._val_paths = None
        self.last_error: Optional[float] = None  # of the latest check, for the logs and tests

    # ------------------------------------------------------------------ test
    @staticmethod
    def _tested_model(runner):
        """The model under test, inside its TTA wrapper if it has one (tools/test.py --tta)."""
        model = unwrap(runner.model)
        return model.module if isinstance(model, BaseTTAModel) else model

    def before_test_epoch(self, runner) -> None:
        if not self.fuse_test:
            return
        model = self._tested_model(runner)
        if not deploy_layers(model) and not is_deployed(model):
            print_log('PDDRDeployHook: the model holds no PDConv2d or RPG layer, nothing to fuse', logger='current')
            return
        model.eval()
        if is_deployed(model):
            print_log('PDDRDeployHook: the model is already in deploy (fused) form', logger='current')
            return
        self._params_before = count_params(model)
        self._first_batch = True  # fused there, once the first batch can check it

    @staticmethod
    def _skip_ema_swap_back(runner) -> None:
        """EMAHook swaps its weights in before testing (before this hook: the fused model is the EMA one)
        and back afterwards, parameter by parameter, which cannot work on the fused model. The test is
        over by then, so that swap back is skipped for this run."""
        for hook in getattr(runner, 'hooks', []):
            if isinstance(hook, EMAHook):
                hook.after_test_epoch = lambda runner, metrics=None: None
                print_log('PDDRDeployHook: the EMA weights were fused; EMAHook will not swap them back after '
                          'testing', logger='current')

    def before_test_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        if not self._first_batch:
            return
        self._first_batch = False
        model = self._tested_model(runner)
        if isinstance(unwrap(runner.model), BaseTTAModel) and isinstance(data_batch, dict):
            data_batch = {k: v[0] for k, v in data_batch.items()}  # TTA: the first augmentation's batch
        with torch.no_grad():
            data = model.data_preprocessor(data_batch, False)  # as test_step does
        expected, flops_before = None, None
        if self.check_outputs or self.log_complexity:
            with forward_path(model, 'branches'):  # the unfused reference, before fusing in place
                expected = tensor_forward(model, data) if self.check_outputs else None
                flops_before = self._flops(model, data) if self.log_complexity else None
        kinds = deploy_kinds(model)
        num = switch_to_deploy(model)
        print_log(f'PDDRDeployHook: fused {num} {kinds} layers for testing', logger='current')
        self._skip_ema_swap_back(runner)
        if self.log_complexity:
            print_log(f"PDDRDeployHook: input {tuple(data['inputs'].shape)}: params "
                      f'{format_count(self._params_before)} -> {format_count(count_params(model))}, FLOPs '
                      f'{format_count(flops_before)} -> {format_count(self._flops(model, data))} (unfused -> fused)',
                      logger='current')
        if self.check_outputs:
            self._check(expected, model, data)

    @staticmethod
    def _flops(model, data) -> Optional[int]:
        try:
            return count_flops(model, data['inputs'], data.get('data_samples'))
        except Exception as e:  # tracing can fail on exotic heads; the check must still run
            print_log(f'PDDRDeployHook: FLOPs could not be counted ({type(e).__name__}: {e})', logger='current',
                      level=30)
            return None

    def _check(self, expected, model, data) -> None:
        actual = tensor_forward(model, data)
        err = compare_outputs(actual, expected)
        self.last_error = err
        if not err <= self.tolerance:  # also catches NaN
            raise RuntimeError(
                f'PDDRDeployHook: the fused model disagrees with the unfused one on the first test batch: '
                f'max relative error {err:.3e} > tolerance {self.tolerance:.1e}. The fusion is broken for '
                'this model (or the checkpoint does not match the config); the metrics would be wrong.')
        print_log(f'PDDRDeployHook: fused outputs match the unfused ones (max relative error {err:.2e} <= '
                  f'{self.tolerance:.1e})', logger='current')

    # ------------------------------------------------------------------ validation while training
    def before_val_epoch(self, runner) -> None:
        # RPG layers compute with their generated kernels, what their deploy form holds: nothing to switch
        layers = [m for m in pd_layers(unwrap(runner.model)) if not m.deploy]
        if not self.fuse_val or not layers:
            return
        self._val_paths = forward_path(unwrap(runner.model), 'fused')
        self._val_paths.__enter__()
        print_log(f'PDDRDeployHook: validating through the fused kernels of {len(layers)} PDConv2d layers',
                  logger='current')

    def after_val_epoch(self, runner, metrics=None) -> None:
        if self._val_paths is not None:
            self._val_paths.__exit__(None, None, None)
            self._val_paths = None
