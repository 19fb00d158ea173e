"""The demo's comparison tools on synthetic work dirs: compare_runs.py (curves) and demo_summary.py (table)."""
import importlib.util
import json
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))


def load_tool(rel: str):
    spec = importlib.util.spec_from_file_location(osp.basename(rel), osp.join(REPO, 'tools', rel + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compare_runs = load_tool('analysis_tools/compare_runs')
demo_summary = load_tool('misc/demo_summary')


def write_json(path: str, records) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        if isinstance(records, list):
            f.write(''.join(json.dumps(r) + '\n' for r in records))
        else:
            json.dump(records, f)


def fake_train_dir(root: str, name: str, scale: float, epochs: int = 3, iters: int = 10) -> str:
    work = osp.join(root, name)
    records = []
    for e in range(1, epochs + 1):
        for i in range(1, iters + 1, 5):
            step = (e - 1) * iters + i
            records.append(dict(loss=scale * 2.0 / step ** 0.3, loss_cls=1.0, lr=1e-3, epoch=e, iter=step, step=step))
        records.append({'coco/bbox_mAP': 0.1 * e * scale, 'coco/bbox_mAP_50': 0.2 * e * scale, 'step': e})
    write_json(osp.join(work, '20250101_000000', 'vis_data', 'scalars.json'), records)
    return work


def fake_test_dir(root: str, name: str, ap: float) -> str:
    work = osp.join(root, name)
    write_json(osp.join(work, '20250101_000000', '20250101_000000.json'),
               {'coco/bbox_mAP': ap, 'coco/bbox_mAP_50': ap + 0.2, 'coco/bbox_mAP_75': ap / 2})
    return work


def fake_benchmark(path: str) -> str:
    row = lambda ms, params, flops: dict(median_ms=ms, p10_ms=ms * 0.9, p90_ms=ms * 1.2, images_per_s=1e3 / ms,  # noqa
                                         repeats=5, params=params, flops=flops)
    write_json(path, dict(device='cpu', batch_size=1, shape=[128, 128], repeat=5, warmup=2, fused_layers=16,
                          inference=dict(unfused=row(30.0, 2.27e6, 184e6), fused=row(12.0, 3.1e6, 124e6),
                                         baseline=row(10.0, 1.02e6, 122e6),
                                         mixing=dict(median_ms=1.0, p10_ms=0.9, p90_ms=1.1, images_per_s=1e3,
                                                     repeats=5, layers=16)),
                          ratios={'fused/baseline': 1.2, 'unfused/fused': 2.5, 'mixing/baseline': 0.1}))
    return path


def test_compare_runs_draws_both_runs_on_shared_axes(tmp_path, capsys):
    plain = fake_train_dir(str(tmp_path), 'plain', 1.0)
    pdb = fake_train_dir(str(tmp_path), 'pdb', 1.2)
    out = str(tmp_path / 'curves.png')
    compare_runs.main([plain, pdb, '--labels', 'plain', 'PD-B', '--out', out])
    printed = capsys.readouterr().out
    assert 'plain: 6 logged iterations, 3 evaluations' in printed
    assert 'PD-B: 6 logged iterations, 3 evaluations' in printed
    assert 'coco/bbox_mAP, coco/bbox_mAP_50' in printed
    img = np.asarray(Image.open(out).convert('L'))
    assert img.shape[0] > 300 and img.shape[1] > 800 and img.std() > 5


def test_compare_runs_needs_one_label_per_run(tmp_path):
    plain = fake_train_dir(str(tmp_path), 'plain', 1.0)
    with pytest.raises(SystemExit):
        compare_runs.main([plain, '--labels', 'a', 'b', '--out', str(tmp_path / 'x.png')])


def test_compare_runs_tells_same_named_runs_apart(tmp_path, capsys):
    """An ablation study's runs are all called seed<s>: the default labels take parent folders until they
    differ, and labels that repeat anyway are refused (a dict of runs would silently keep one)."""
    a = fake_train_dir(str(tmp_path / 'plain'), 'seed0', 1.0)
    b = fake_train_dir(str(tmp_path / 'pd-b'), 'seed0', 1.2)
    compare_runs.main([a, b, '--out', str(tmp_path / 'c.png')])
    printed = capsys.readouterr().out
    assert 'plain/seed0: 6 logged iterations' in printed and 'pd-b/seed0: 6 logged iterations' in printed
    with pytest.raises(SystemExit, match='repeat'):
        compare_runs.main([a, b, '--labels', 'x', 'x', '--out', str(tmp_path / 'd.png')])


def test_demo_summary_table(tmp_path, capsys):
    root = str(tmp_path)
    bench = fake_benchmark(osp.join(root, 'bench.json'))
    out = osp.join(root, 'summary.md')
    text = demo_summary.main([bench, '--baseline', fake_test_dir(root, 'plain_test', 0.40),
                              '--unfused', fake_test_dir(root, 'unfused', 0.45),
                              '--fused', fake_test_dir(root, 'fused', 0.45), '--name', 'PD-B',
                              '--train-dirs', fake_train_dir(root, 'plain', 1.0), fake_train_dir(root, 'pdb', 1.0),
                              '--note', 'a note', '--out', out])
    assert open(out).read() == text
    rows = [[c.strip() for c in line.strip('|').split('|')] for line in text.splitlines() if line.startswith('| ')]
    assert rows[0] == ['model', 'mAP', 'mAP@50', 'params', 'FLOPs (128x128)', 'latency ms (batch 1, 128x128)',
                       'p10-p90 ms']
    assert rows[1][:3] == ['plain', '40.0', '60.0'] and rows[1][3:6] == ['1.020M', '122.000M', '10.00']
    assert rows[2][:3] == ['PD-B unfused', '45.0', '65.0'] and rows[2][5] == '30.00'
    assert rows[3][:3] == ['PD-B fused', '45.0', '65.0'] and rows[3][4] == '124.000M'
    assert '- fused == unfused on every metric: yes' in text
    assert '- epochs trained: plain 3, pdb 3' in text
    assert 'fused/plain 1.20' in text and '- a note' in text


def test_demo_summary_without_baseline_and_missing_metrics(tmp_path):
    root = str(tmp_path)
    bench = fake_benchmark(osp.join(root, 'bench.json'))
    unfused, fused = fake_test_dir(root, 'unfused', 0.3), fake_test_dir(root, 'fused', 0.3)
    text = demo_summary.main([bench, '--unfused', unfused, '--fused', fused])
    rows = [[c.strip() for c in line.strip('|').split('|')] for line in text.splitlines() if line.startswith('| ')]
    assert rows[1][:3] == ['plain (untrained: latency and size only)', '-', '-'] and rows[1][5] == '10.00'
    assert 'same architecture as the trained baseline' not in text
    with pytest.raises(SystemExit, match='no test metrics found for fused'):
        demo_summary.main([bench, '--unfused', unfused, '--fused', osp.join(root, 'nothing')])


def test_demo_baseline_params_match_the_benchmarks_plain_model():
    """The demo's check that the trained baseline is the benchmark's plain model counts both the same way
    (BNs folded), so the same architecture reads 'the same as'."""
    import torch
    from mmengine.config import Config

    import pddr_mm  # noqa: F401
    from pddr_mm.deployment import count_params
    from pddr_mm.deployment.benchmark import build_variants
    demo_summary = load_tool('misc/demo_summary')
    models, _ = build_variants(Config.fromfile(osp.join(REPO, 'configs/demo/retinanet_r18-pdb_shapes.py')), None,
                               torch.device('cpu'))
    plain = demo_summary.baseline_params(osp.join(REPO, 'configs/demo/retinanet_r18-plain_shapes.py'))
    assert plain == count_params(models['baseline'])
