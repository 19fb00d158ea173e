"""The pure fusion functions of ``pddr_mm.ops.fusion``, each against its textbook construction."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pddr_mm.ops import (bn_scale_shift, fold_bn, identity_kernel, mix_kernels, pad_to_window, per_sample_conv2d,
                         sum_kernels, to_layer_groups)
from random_bn import max_rel_error, randomize_bn

D = torch.float64


@pytest.mark.parametrize('affine', [True, False])
def test_fold_bn_equals_bn_after_conv(affine):
    conv = nn.Conv2d(6, 4, 3, padding=1, groups=2, bias=False).double()
    bn = nn.BatchNorm2d(4, affine=affine).double()
    randomize_bn(bn)
    bn.eval()
    x = torch.randn(2, 6, 7, 5, dtype=D)
    kernel, bias = fold_bn(conv.weight, bn)
    assert max_rel_error(F.conv2d(x, kernel, bias, padding=1, groups=2), bn(conv(x))) <= 1e-12


def test_fold_bn_gradients_equal_the_textbook_product():
    # fold_bn scales the kernel with the BN op itself; its gradients must be those of kernel * scale
    conv, bn = nn.Conv2d(5, 4, 3, bias=False).double(), nn.BatchNorm2d(4).double()
    randomize_bn(bn)
    bn.eval()
    g_kernel, g_bias = torch.randn(4, 5, 3, 3, dtype=D), torch.randn(4, dtype=D)
    kernel, bias = fold_bn(conv.weight, bn)
    got = torch.autograd.grad((kernel * g_kernel).sum() + (bias * g_bias).sum(), (conv.weight, bn.weight, bn.bias))
    scale, shift = bn_scale_shift(bn)
    textbook = conv.weight * scale.reshape(-1, 1, 1, 1)
    assert max_rel_error(kernel, textbook) <= 1e-14
    want = torch.autograd.grad((textbook * g_kernel).sum() + (shift * g_bias).sum(),
                               (conv.weight, bn.weight, bn.bias))
    for a, b in zip(got, want):
        assert max_rel_error(a, b) <= 1e-12


def test_sum_kernels_adds_into_a_new_tensor_and_leaves_the_inputs_alone():
    ts = [torch.randn(3, 2, 3, 3, dtype=D, requires_grad=True) for _ in range(4)]
    before = [t.detach().clone() for t in ts]
    total = sum_kernels(ts)
    assert max_rel_error(total, sum(before)) <= 1e-14
    assert all(torch.equal(t, b) for t, b in zip(ts, before))
    grads = torch.autograd.grad((total * before[0]).sum(), ts)
    assert all(torch.equal(g, before[0]) for g in grads)
    assert sum_kernels(ts[:1]) is ts[0]


def test_bn_scale_shift_is_differentiable_in_gamma_and_beta():
    bn = nn.BatchNorm2d(3).double()
    randomize_bn(bn)
    bn.eval()
    a, b = torch.randn(3, dtype=D), torch.randn(3, dtype=D)
    scale, shift = bn_scale_shift(bn)
    grad_gamma, grad_beta = torch.autograd.grad((scale * a + shift * b).sum(), (bn.weight, bn.bias))
    inv_std = (bn.running_var + bn.eps).rsqrt()
    assert max_rel_error(grad_gamma, inv_std * a - bn.running_mean * inv_std * b) <= 1e-12
    assert torch.equal(grad_beta, b)


def test_bn_scale_shift_without_affine_and_in_training_mode():
    bn = nn.BatchNorm2d(3, affine=False).double()
    randomize_bn(bn)
    bn.eval()
    scale, shift = bn_scale_shift(bn)
    x = torch.randn(2, 3, 4, 4, dtype=D)
    assert max_rel_error(x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1), bn(x)) <= 1e-12
    with pytest.raises(RuntimeError, match='training mode'):
        bn_scale_shift(bn.train())
    with pytest.raises(TypeError, match='BatchNorm'):
        bn_scale_shift(nn.GroupNorm(1, 3))


@pytest.mark.parametrize('size,window', [((3, 1), (3, 3)), ((1, 5), (5, 5)), ((1, 1), (3, 5)), ((3, 3), (3, 3))])
def test_pad_to_window_centres_the_kernel(size, window):
    kernel = torch.randn((4, 2) + size, dtype=D)
    padded = pad_to_window(kernel, window)
    top, left = (window[0] - size[0]) // 2, (window[1] - size[1]) // 2
    expected = torch.zeros((4, 2) + window, dtype=D)
    expected[..., top:top + size[0], left:left + size[1]] = kernel
    assert torch.equal(padded, expected)
    with pytest.raises(ValueError, match='centre'):
        pad_to_window(torch.randn(4, 2, 2, 2), (3, 3))


@pytest.mark.parametrize('cin,cout,groups,layer_groups', [(8, 12, 4, 1), (8, 12, 4, 2), (12, 12, 6, 3), (6, 6, 3, 3)])
def test_to_layer_groups_convolves_as_the_grouped_kernel(cin, cout, groups, layer_groups):
    kernel = torch.randn(cout, cin // groups, 3, 3, dtype=D)
    x = torch.randn(2, cin, 7, 6, dtype=D)
    coarse = to_layer_groups(kernel, groups, layer_groups)
    assert coarse.shape == (cout, cin // layer_groups, 3, 3)
    expected = F.conv2d(x, kernel, padding=1, groups=groups)
    assert max_rel_error(F.conv2d(x, coarse, padding=1, groups=layer_groups), expected) <= 1e-12
    with pytest.raises(ValueError, match='does not fit'):
        to_layer_groups(torch.randn(12, 2, 3, 3), 4, 3)


@pytest.mark.parametrize('channels,groups,window', [(6, 1, (3, 3)), (6, 3, (3, 5)), (6, 6, (1, 1))])
def test_identity_kernel_is_the_identity(channels, groups, window):
    x = torch.randn(2, channels, 5, 7, dtype=D)
    kernel = identity_kernel(channels, groups, window, x)
    padding = (window[0] // 2, window[1] // 2)
    assert torch.equal(F.conv2d(x, kernel, padding=padding, groups=groups), x)


@pytest.mark.parametrize('groups', [1, 2])
def test_mix_and_per_sample_conv_equal_a_loop_over_samples(groups):
    kernels = torch.randn(3, 4, 6 // groups, 3, 3, dtype=D)
    biases = torch.randn(3, 4, dtype=D)
    weights = torch.softmax(torch.randn(5, 3, dtype=D), 1)
    x = torch.randn(5, 6, 8, 7, dtype=D)
    mixed = mix_kernels(weights, kernels)
    out = per_sample_conv2d(x, mixed, weights @ biases, (2, 1), (1, 2), (1, 2), groups)
    for n in range(5):
        kernel = sum(weights[n, b] * kernels[b] for b in range(3))
        bias = sum(weights[n, b] * biases[b] for b in range(3))
        expected = F.conv2d(x[n:n + 1], kernel, bias, (2, 1), (1, 2), (1, 2), groups)
        assert max_rel_error(out[n:n + 1], expected) <= 1e-12
    with pytest.raises(ValueError, match='do not match'):
        per_sample_conv2d(x[:4], mixed, biases, 1, 1, 1, groups)
