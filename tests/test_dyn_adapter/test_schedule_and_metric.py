"""The loss-weight schedule (adaptive prioritization) and ExitMetric's arithmetic."""
import math

import pytest
import torch

from pddr_mm.dyn_adapter import ExitMetric, exit_loss_weights


def test_early_heads_are_weighted_up_then_down():
    start, end = [1., 1., 1.], [0.2, 0.6, 1.]
    at = [exit_loss_weights(p / 100, start, end, warmup_ratio=0.2) for p in range(101)]
    assert at[0] == pytest.approx(end) and at[20] == pytest.approx(start) and at[100] == pytest.approx(end)
    first = [w[0] for w in at]
    assert first.index(max(first)) == 20  # up during the warm-up, then down
    assert all(a <= b for a, b in zip(first[:20], first[1:21])) and all(a >= b for a, b in zip(first[20:], first[21:]))
    assert all(w[2] == pytest.approx(1.) for w in at)  # the last head keeps its weight
    decay_only = exit_loss_weights(0., start, end, warmup_ratio=0.)
    assert decay_only == pytest.approx(start)


def test_exit_metric_shares_accuracy_and_flops():
    metric = ExitMetric(num_exits=3)
    rows = [(0, 1, 1, 10.), (0, 2, 1, 10.), (2, 0, 0, 30.), (2, 1, 1, 30.)]  # exit, pred, gt, flops
    metric.process(None, [dict(exit_index=e, pred_label=torch.tensor([p]), gt_label=torch.tensor([g]), flops=f,
                               full_flops=25.) for e, p, g, f in rows])
    out = metric.compute_metrics(metric.results)
    assert out['share_exit0'] == 0.5 and out['share_exit1'] == 0 and out['share_exit2'] == 0.5
    assert out['top1_exit0'] == 50. and math.isnan(out['top1_exit1']) and out['top1_exit2'] == 100.
    assert out['mflops'] == pytest.approx(20e-6) and out['flops_ratio'] == pytest.approx(0.8)


def test_exit_metric_refuses_predictions_without_exits():
    with pytest.raises(ValueError, match='exit_index'):
        ExitMetric().process(None, [dict(pred_label=torch.tensor([0]))])
