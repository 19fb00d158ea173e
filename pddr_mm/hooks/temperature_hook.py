"""PDDRTemperatureHook: anneal the PD-B refinement softmax temperature at the start of training."""
from typing import Dict, List, Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from pddr_mm.ops import Refinement

DataBatch = Optional[dict]


def refinements(model) -> List[Refinement]:
    """Every PD-B refinement module of ``model`` (training or deployed form, wrapped or not)."""
    return [m for m in model.modules() if isinstance(m, Refinement)]


@HOOKS.register_module()
class PDDRTemperatureHook(Hook):
    """Anneal the temperature of every PD-B refinement softmax linearly from ``start`` to ``end``.

    With a high temperature the per-sample branch weights start close to uniform, so every branch gets
    gradient while the refinement module is still random; lowering it lets the weights become
    sample-specific (DyConv, Chen et al. 2020, anneals from 30 to 1 over the first 10 epochs).

    The temperature of iteration ``runner.iter`` is set in ``before_train_iter`` from the iteration count
    alone (nothing is stored), so a resumed run continues the schedule where it stopped. Annealing
    lasts ``epochs`` epochs (``epochs * len(train_dataloader)`` iterations, changing every iteration like
    an mmengine scheduler with ``convert_to_iter_based=True``) or ``iters`` iterations. From then on each
    module holds ``end``; with ``end=None`` (the default) that is its configured temperature, the one it
    was built with (recorded before training) and is deployed with. After training every module holds
    its configured temperature again in any case (also when training stopped before annealing ended).

    Validation during annealing runs at the configured temperatures by default, so the curves show the
    accuracy the model would be deployed with; ``val_annealed=True`` validates at the current one.

    Args:
        start: temperature at iteration 0.
        end: temperature at the end of annealing; None: each module's configured temperature.
        epochs: annealing length in epochs (give this or ``iters``).
        iters: annealing length in iterations.
        val_annealed: validate at the current (annealed) temperature instead of the configured one.
    """

    priority = 'NORMAL'

    def __init__(self,
                 start: float = 30.0,
                 end: Optional[float] = None,
                 epochs: Optional[float] = None,
                 iters: Optional[int] = None,
                 val_annealed: bool = False) -> None:
        if (epochs is None) == (iters is None):
            raise ValueError(f'PDDRTemperatureHook: give the annealing length as exactly one of epochs or iters '
                             f'(got epochs={epochs}, iters={iters})')
        length = epochs if epochs is not None else iters
        if not length > 0:
            raise ValueError(f'PDDRTemperatureHook: the annealing length must be positive, got {length}')
        if not start > 0 or (end is not None and not end > 0):
            raise ValueError(f'PDDRTemperatureHook: temperatures must be positive (start={start}, end={end})')
        self.start, self.end = float(start), None if end is None else float(end)
        self.epochs, self.iters = epochs, iters
        self.val_annealed = val_annealed
        self._configured: Dict[int, float] = {}  # id(module) -> temperature it was built with
        self._modules: List[Refinement] = []
        self._total_iters: Optional[int] = None
        self._current: Optional[List[float]] = None

    # ------------------------------------------------------------------ schedule
    def total_iters(self, runner) -> int:
        """Annealing length in iterations."""
        if self.iters is not None:
            return int(self.iters)
        return max(1, int(round(self.epochs * len(runner.train_dataloader))))

    def temperature_at(self, it: int, end: float) -> float:
        """Linear from ``start`` at iteration 0 to ``end`` at ``total_iters`` and after."""
        frac = min(max(it / self._total_iters, 0.0), 1.0)
        return self.start + (end - self.start) * frac

    def _end(self, module: Refinement) -> float:
        return self._configured[id(module)] if self.end is None else self.end

    def _set(self, values: List[float]) -> None:
        for m, t in zip(self._modules, values):
            m.temperature = t

    # ------------------------------------------------------------------ hooks
    def before_train(self, runner) -> None:
        self._modules = refinements(runner.model)
        if not self._modules:
            print_log('PDDRTemperatureHook: the model holds no PD-B refinement module (plain or PD-A?): '
                      'nothing to anneal', logger='current', level=30)
            return
        missing = [m for m in self._modules if not hasattr(m, 'temperature')]
        if missing:
            raise AttributeError('PDDRTemperatureHook: this Refinement has no `temperature` attribute; the '
                                 'installed pddr_mm.ops predates temperature annealing')
        for m in self._modules:  # once per hook: a second train() must not record annealed values
            self._configured.setdefault(id(m), float(m.temperature))
        self._total_iters = self.total_iters(runner)
        ends = sorted({self._end(m) for m in self._modules})
        print_log(f'PDDRTemperatureHook: {len(self._modules)} refinement modules, temperature {self.start:g} -> '
                  f'{"/".join(f"{e:g}" for e in ends)} over the first {self._total_iters} iterations'
                  f'{f" ({self.epochs:g} epochs)" if self.epochs is not None else ""}', logger='current')

    def before_train_iter(self, runner, batch_idx: int, data_batch: DataBatch = None) -> None:
        if not self._modules:
            return
        values = [self.temperature_at(runner.iter, self._end(m)) for m in self._modules]
        self._set(values)
        self._current = values
        runner.message_hub.update_scalar('train/pddr_temperature', sum(values) / len(values))

    def _restore_configured(self) -> None:
        self._set([self._configured[id(m)] for m in self._modules])

    def before_val_epoch(self, runner) -> None:
        if self._modules and not self.val_annealed:
            self._restore_configured()

    def after_val_epoch(self, runner, metrics=None) -> None:
        if self._modules and not self.val_annealed and self._current is not None:
            self._set(self._current)  # the next training iteration sets it anyway; keep the state coherent

    def after_train(self, runner) -> None:
        if self._modules:
            self._restore_configured()
            self._current = None
