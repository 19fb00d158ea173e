"""Frozen-BN training through the fused kernels ('auto': per-sample kernels for PD-B; 'stacked': one dense
convolution over the branch kernels, mixed per sample): same outputs, loss and gradients as the branches."""
import pytest
import torch

from random_bn import max_rel_error
from test_fusion_exact import LAYER_KINDS, SUBSETS_AND_MODES, make_layer

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
# the two paths sum a gradient over samples, positions and branches in different orders: in float32 that
# alone moves a small gradient by ~1e-5 relative (float64 shows the paths are exact, at 1e-10)
GRAD_TOL = {torch.float32: 3e-5, torch.float64: 1e-10}


def run(layer, x, path):
    layer.zero_grad()
    layer.forward_path = path
    out = layer(x)
    terms = out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    terms.sum().backward()
    return out.detach(), terms.detach(), {n: p.grad.clone() for n, p in layer.named_parameters()}


@pytest.mark.parametrize('path', ['auto', 'stacked'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('branches,mode', SUBSETS_AND_MODES)
def test_online_path_equals_branches(branches, mode, dtype, path):
    if 'identity' in branches:
        branches = tuple(b for b in branches if b != 'identity')
    check_online_path(make_layer(mode, branches, dtype=dtype, stride=2, bias=True, reduction=2),
                      torch.randn(3, 8, 11, 10, dtype=dtype), path)


@pytest.mark.parametrize('path', ['auto', 'stacked'])
@pytest.mark.parametrize('mode', ['A', 'B'])
@pytest.mark.parametrize('cin,cout,k,groups,branch_groups,branches', LAYER_KINDS)
def test_online_path_equals_branches_in_grouped_depthwise_and_1x1_layers(cin, cout, k, groups, branch_groups,
                                                                          branches, mode, path):
    layer = make_layer(mode, branches, cin=cin, cout=cout, k=k, groups=groups, branch_groups=branch_groups,
                       dtype=torch.float64, bias=True, reduction=2)
    check_online_path(layer, torch.randn(2, cin, 7, 9, dtype=torch.float64), path)


def check_online_path(layer, x, path='auto'):
    dtype = x.dtype
    layer.train()
    for m in layer.modules():  # frozen BN, as with norm_eval=True
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    out_b, terms_b, grads_b = run(layer, x, 'branches')
    out_f, terms_f, grads_f = run(layer, x, path)  # auto picks the fused path: BNs are frozen
    tol = TOL[dtype]
    assert max_rel_error(out_f, out_b) <= tol
    # the loss relative to the size of its terms (their signs cancel in the sum)
    assert (terms_f.sum() - terms_b.sum()).abs() <= tol * terms_b.abs().sum()
    assert grads_f.keys() == grads_b.keys()
    for name, g in grads_b.items():
        assert g.abs().max() > 0, name
        assert max_rel_error(grads_f[name], g) <= GRAD_TOL[dtype], name


def test_auto_uses_branches_when_bn_trains():
    layer = make_layer('A').train()
    layer.forward_path = 'auto'
    calls = []
    layer.branches[0].register_forward_hook(lambda *a: calls.append(1))
    layer(torch.randn(2, 8, 6, 6))
    assert calls, 'train-mode BN must use batch statistics through the branches'
    calls.clear()
    layer.eval()
    with torch.no_grad():
        layer(torch.randn(2, 8, 6, 6))
    assert not calls, 'eval mode runs the fused convolution'


@pytest.mark.parametrize('path', ['fused', 'stacked'])
def test_forcing_fused_path_with_training_bn_raises(path):
    layer = make_layer('B').train()
    layer.forward_path = path
    with pytest.raises(RuntimeError, match='eval mode'):
        layer(torch.randn(2, 8, 6, 6))
