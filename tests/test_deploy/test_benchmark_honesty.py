"""benchmark.py reports only comparisons that mean something, and how far each ratio can be trusted.

A network is never timed against itself (a plain config is refused, a deploy config has no unfused row),
each ratio comes with the spread of its per-repetition ratios, and too few repeats or overlapping rows
are flagged. The timing itself is not asserted on: the pure functions get given lists of times.
"""
import json

import numpy as np
import pytest
import torch
from deploy_fixtures import CLS_CONFIG, ROOT, load_tool, write_config
from mmengine.config import Config

from pddr_mm.deployment.benchmark import MIN_REPEATS, noise_warnings, ratio_spread
from pddr_mm.deployment.configs import to_deploy_config

benchmark = load_tool('analysis_tools/benchmark')
DEMO_CLS = f'{ROOT}/configs/demo/pd-b-resnet18_shapes-cls.py'
DEMO_PLAIN = f'{ROOT}/configs/demo/retinanet_r18-plain_shapes.py'
FAST = ['--shape', '64', '64', '--repeat-num', '3', '--num-warmup', '0']


def test_ratio_spread_pairs_the_times_of_each_repetition():
    """The per-repetition ratios divide the two times of the same repetition: here 1/3, 1 and 3 (sorting or
    shuffling the lists would give other ratios); the ratio of the medians is reported beside them."""
    s = ratio_spread([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    assert s['ratio'] == 1.0 and s['repeats'] == 3
    assert s['min'] == pytest.approx(1 / 3) and s['max'] == 3.0 and s['median'] == 1.0
    assert s['p10'] == pytest.approx(np.percentile([1 / 3, 1, 3], 10)) and s['p90'] == pytest.approx(2.6)
    assert s['min'] <= s['p10'] <= s['median'] <= s['p90'] <= s['max']
    assert s['within_noise']  # the same times in both rows

    s = ratio_spread([10.0, 12.0, 11.0, 30.0], [5.0, 6.0, 5.0, 6.0])
    assert s['ratio'] == pytest.approx(11.5 / 5.5) and s['median'] == pytest.approx((2.0 + 2.2) / 2)
    assert s['max'] == 5.0 and not s['within_noise']
    with pytest.raises(ValueError, match='equally long'):
        ratio_spread([1.0, 2.0], [1.0])


def test_noise_warnings_for_few_repeats_and_overlapping_rows():
    apart = ratio_spread([10.0] * 20, [5.0] * 20)
    overlap = ratio_spread(list(range(10, 30)), list(range(12, 32)))
    assert noise_warnings(MIN_REPEATS, {'fused/baseline': apart}) == []
    assert 'only 3 timed repeats' in noise_warnings(3, {'fused/baseline': apart})[0]
    (line, ) = noise_warnings(20, {'fused/baseline': apart, 'unfused/fused': overlap})
    assert line.startswith('unfused/fused:') and 'within noise' in line


def test_plain_config_is_refused_in_both_backends():
    """Its unfused, fused and baseline forms are one network: 'ratios' of it against itself mean nothing."""
    for backend in ('pytorch', 'onnxruntime'):
        with pytest.raises(ValueError, match='retinanet_r18-plain_shapes.py builds no PDDR layer'):
            benchmark.main([DEMO_PLAIN, '--backend', backend] + FAST)


def test_deploy_config_has_no_unfused_row(tmp_path, capsys):
    """A deploy config builds its layers fused: the 'unfused' row would be the fused network again."""
    deploy_cfg = str(tmp_path / 'deploy_cls.py')
    to_deploy_config(Config.fromfile(DEMO_CLS)).dump(deploy_cfg)
    result = benchmark.main([deploy_cfg] + FAST)
    out = capsys.readouterr().out
    assert set(result['inference']) == {'fused', 'baseline', 'mixing'}
    assert set(result['ratios']) == set(result['ratio_spread']) == {'fused/baseline', 'mixing/baseline'}
    assert 'there is no unfused row' in out and 'unfused/fused' not in out
    with pytest.raises(ValueError, match='pass the training config'):
        benchmark.main([deploy_cfg, '--train'] + FAST)


def check_spread(result):
    """Every reported ratio: its spread is consistent and comes from the rows' own paired times."""
    for key, s in result['ratio_spread'].items():
        num, den = key.split('/')
        a, b = np.array(result['inference'][num]['times_ms']), np.array(result['inference'][den]['times_ms'])
        assert len(a) == len(b) == s['repeats'] == result['repeat']
        assert s['min'] <= s['p10'] <= s['median'] <= s['p90'] <= s['max']
        assert s['median'] == pytest.approx(np.median(a / b))
        assert s['ratio'] == pytest.approx(result['ratios'][key]) == pytest.approx(np.median(a) / np.median(b))


def test_pytorch_report_prints_threads_spread_and_few_repeats_warning(tmp_path, capsys):
    before = torch.get_num_threads()
    out_json = str(tmp_path / 'bench.json')
    result = benchmark.main([DEMO_CLS, '--threads', '1', '--json', out_json] + FAST)
    out = capsys.readouterr().out
    assert torch.get_num_threads() == before  # main() gives the thread count back
    assert result['threads'] == 1 and 'torch threads 1,' in out.splitlines()[0]
    assert set(result['ratio_spread']) == {'fused/baseline', 'unfused/fused', 'mixing/baseline'}
    check_spread(result)
    s = result['ratio_spread']['fused/baseline']
    assert f"latency ratio fused/baseline: {s['ratio']:.3f} (per repetition: median {s['median']:.3f}, " \
           f"p10-p90 {s['p10']:.3f}-{s['p90']:.3f}, 3 pairs)" in out
    assert 'latency ratio unfused/fused: ' in out
    assert 'warning: only 3 timed repeats' in out and result['warnings'][0].startswith('only 3 timed repeats')
    assert not result['same_network']  # PD-B keeps its refinement: not the plain network
    with open(out_json) as f:
        assert json.load(f)['ratio_spread'] == result['ratio_spread']


def test_onnxruntime_report_prints_spread_and_same_network_note(tmp_path, capsys):
    """A fused PD-A network is the plain one: the table says so (the ratio can only show noise)."""
    cfg_path = write_config(str(tmp_path / 'tiny_cls_a.py'), CLS_CONFIG.replace("mode='B'", "mode='A'"))
    result = benchmark.main([cfg_path, '--backend', 'onnxruntime', '--threads', '1', '--shape', '32', '32',
                             '--repeat-num', '3', '--num-warmup', '0'])
    out = capsys.readouterr().out
    assert result['threads'] == 1 and '1 intra-op threads' in out
    check_spread(result)
    assert set(result['ratio_spread']) == {'fused/baseline'} and 'per repetition: median' in out
    assert result['same_network'] and 'note: fused and baseline are the same network' in out
    assert 'warning: only 3 timed repeats' in out
