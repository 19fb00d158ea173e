"""tools/analysis_tools/gpu_check.py: on a machine without CUDA it says so and exits 0; its code runs on the
CPU (tiny demo models and shapes) and fills every table (the figures mean nothing on a CPU)."""
import runpy
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
TOOL = str(ROOT / 'tools/analysis_tools/gpu_check.py')


def run_tool(monkeypatch, *argv):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, 'argv', [TOOL, *argv])
    return runpy.run_path(TOOL, run_name='gpu_check')['main']()


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has CUDA')
def test_without_cuda_it_says_so(monkeypatch, capsys):
    assert run_tool(monkeypatch) == {}
    assert 'no CUDA device' in capsys.readouterr().out


def test_cpu_dry_run_fills_every_table(monkeypatch, capsys, tmp_path):
    out = tmp_path / 'gpu.json'
    result = run_tool(monkeypatch, '--device', 'cpu', '--det-configs', 'configs/demo/retinanet_r18-pdb_shapes.py',
                      '--cls-configs', 'configs/demo/pd-b-resnet18_shapes-cls.py', '--shape', '64',
                      '--cls-shape', '32', '--latency-batches', '1', '2', '--repeat-num', '2', '--num-warmup', '1',
                      '--out', str(out))
    # fp32 and AMP, BN training and frozen; the three strategies fp32 and AMP; two batch sizes
    assert [(r['amp'], r['bn']) for r in result['training']] == [
        (False, 'bn_train'), (False, 'bn_frozen'), (True, 'bn_train'), (True, 'bn_frozen')]
    assert len(result['strategies']) == 2 and all(r['fastest'] in ('branches', 'fused', 'stacked')
                                                  for r in result['strategies'])
    assert [r['batch'] for r in result['latency']] == [1, 2]
    assert all(r['pd_ms'] > 0 and r['plain_ms'] > 0 for r in result['training'])
    text = capsys.readouterr().out
    assert '| configs/demo/retinanet_r18-pdb_shapes.py | True | bn_frozen |' in text
    assert out.is_file() and 'fewer than two GPUs' in text
