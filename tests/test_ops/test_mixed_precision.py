"""Under autocast (bf16 on the CPU here; fp16 on CUDA alike) PDDR layers keep their activations in the
autocast dtype in every forward path, and the fusion math runs in float32 (fused equals unfused within
bf16 rounding)."""
import copy

import pytest
import torch

import pddr_mm
from pddr_mm.ops import PDConv2d
from random_bn import max_rel_error, randomize_bn

BF16_TOL = 2e-2  # bf16 keeps 8 bits of mantissa: a plain conv under autocast is off by ~4e-3 here


def _layer(mode: str) -> PDConv2d:
    torch.manual_seed(0)
    layer = PDConv2d(16, 16, 3, padding=1, mode=mode, branch_groups=4, reduction=4)
    return randomize_bn(layer, seed=1)


@pytest.mark.parametrize('mode', ['A', 'B'])
def test_every_path_keeps_the_autocast_dtype(mode):
    x = torch.randn(3, 16, 10, 10)
    layer = _layer(mode)
    with torch.no_grad():
        reference = layer.eval()(x)  # float32, fused path
        outs = {}
        with torch.autocast('cpu', dtype=torch.bfloat16):
            outs['branches (BN training)'] = copy.deepcopy(layer).train()(x)  # a copy: it updates BN statistics
            layer.forward_path = 'branches'
            outs['branches (BN frozen)'] = layer(x)
            layer.forward_path = 'stacked'
            outs['stacked (BN frozen)'] = layer(x)
            layer.forward_path = 'auto'
            outs['fused (BN frozen)'] = layer(x)
            pddr_mm.switch_to_deploy(layer)
            outs['deployed'] = layer(x)
    for path, out in outs.items():
        assert out.dtype == torch.bfloat16, path
    for path in ('branches (BN frozen)', 'stacked (BN frozen)', 'fused (BN frozen)', 'deployed'):
        assert max_rel_error(outs[path].float(), reference) < BF16_TOL, path


@pytest.mark.parametrize('mode', ['A', 'B'])
def test_fused_path_gradients_under_autocast(mode):
    """Frozen-BN training under autocast: the kernels are built in float32 and the gradients reach the
    float32 branch parameters, close to the float32 step's."""
    x = torch.randn(2, 16, 8, 8)
    grads = []
    for amp in (False, True):
        layer = _layer(mode).eval()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
            out = layer(x)
        out.float().square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in layer.parameters() if p.grad is not None]))
        assert all(p.dtype == torch.float32 for p in layer.parameters())
    assert max_rel_error(grads[1], grads[0]) < 5e-2


@pytest.mark.parametrize('deployed', [False, True])
def test_pd_b_mixes_kernels_in_float32_under_autocast(monkeypatch, deployed):
    """The per-sample kernels are mixed from the float32 branch kernels in float32; only the convolution casts."""
    from pddr_mm.ops import fusion
    seen = []
    original = fusion.per_sample_conv2d
    monkeypatch.setattr(fusion, 'per_sample_conv2d',
                        lambda x, k, b, *args: seen.append((k.dtype, b.dtype)) or original(x, k, b, *args))
    layer = _layer('B').eval()
    if deployed:
        pddr_mm.switch_to_deploy(layer)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out = layer(torch.randn(2, 16, 8, 8))
    assert out.dtype == torch.bfloat16 and seen == [(torch.float32, torch.float32)]
