"""PDDRDeployHook: evaluate the deployed (fused) model, checked against the unfused one."""
from typing import Any, Optional

import torch
from mmengine.hooks import EMAHook, Hook
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel
from mmengine.registry import HOOKS

from pddr_mm.deployment.models import (compare_outputs, count_flops, count_params, deploy_kinds, format_count,
                                       fused_copy, tensor_forward, unfused_reference, unwrap)
from pddr_mm.ops import deploy_layers, is_deployed, switch_to_deploy


@HOOKS.register_module()
class PDDRDeployHook(Hook):
    """Fuse every PDDR layer (and materialise every RPG layer) before testing, after the checkpoint is loaded,
    and check the fusion.

    Test: the runner's model is fused in ``before_test_epoch`` (the checkpoint is loaded by then, and an
    EMAHook has swapped the EMA weights in: those are the ones fused). On
    the first test batch the fused network output (``mode='tensor'``) is compared with that of an
    unfused copy computing branch by branch; a relative error above ``tolerance`` raises, so a broken
    fusion never produces silently wrong metrics. Parameters and FLOPs (mmengine's FlopAnalyzer, on the
    first batch's shape) before and after fusion are logged.

    Training: the training model is never touched. With ``fuse_val=True`` each validation runs on a
    fused copy instead (the deployed accuracy while training; the copy is dropped afterwards).

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
        self._reference = None
        self._params_before = None
        self._first_batch = False
        self._train_model = None
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
        need_ref = self.check_outputs or self.log_complexity
        self._reference = unfused_reference(model) if need_ref else None
        self._params_before = count_params(model)
        kinds = deploy_kinds(model)
        num = switch_to_deploy(model)
        print_log(f'PDDRDeployHook: fused {num} {kinds} layers for testing', logger='current')
        self._first_batch = True
        self._skip_ema_swap_back(runner)

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
        reference, self._reference = self._reference, None
        model = self._tested_model(runner)
        if isinstance(unwrap(runner.model), BaseTTAModel) and isinstance(data_batch, dict):
            data_batch = {k: v[0] for k, v in data_batch.items()}  # TTA: the first augmentation's batch
        with torch.no_grad():
            data = model.data_preprocessor(data_batch, False)  # as test_step does
        if self.log_complexity:
            self._log_complexity(reference, model, data)
        if self.check_outputs:
            self._check(reference, model, data)

    def _log_complexity(self, reference, model, data) -> None:
        inputs, samples = data['inputs'], data.get('data_samples')
        flops = []
        for m in (reference, model):
            try:
                flops.append(count_flops(m, inputs, samples))
            except Exception as e:  # tracing can fail on exotic heads; the check must still run
                print_log(f'PDDRDeployHook: FLOPs could not be counted ({type(e).__name__}: {e})',
                          logger='current', level=30)
                flops.append(None)
        print_log(
            f'PDDRDeployHook: input {tuple(inputs.shape)}: params {format_count(self._params_before)} -> '
            f'{format_count(count_params(model))}, FLOPs {format_count(flops[0])} -> {format_count(flops[1])} '
            '(unfused -> fused)',
            logger='current')

    def _check(self, reference, model, data) -> None:
        expected = tensor_forward(reference, data)
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
        if not self.fuse_val or not deploy_layers(unwrap(runner.model)):
            return
        kinds = deploy_kinds(unwrap(runner.model))
        fused, num = fused_copy(runner.model)
        print_log(f'PDDRDeployHook: validating a fused copy of the model ({num} {kinds} layers fused)',
                  logger='current')
        self._train_model, runner.model = runner.model, fused

    def after_val_epoch(self, runner, metrics=None) -> None:
        if self._train_model is not None:
            runner.model, self._train_model = self._train_model, None
