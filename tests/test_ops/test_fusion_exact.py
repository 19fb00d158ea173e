"""Fused and unfused PDConv2d agree to float precision: every branch type and subset, mode, layer kind,
shape and batch, with random BN statistics and affine parameters."""
import copy
import itertools

import pytest
import torch

from pddr_mm import PDConv2d, switch_to_deploy
from random_bn import max_rel_error, randomize_bn

# the rows of the seed's ablation table (ResNet-18), plus single non-standard branches
ABLATION = [
    ('standard', ),
    ('standard', 'standard'),
    ('standard', 'group'),
    ('standard', 'skeleton'),
    ('standard', 'group', 'skeleton'),
    ('standard', 'standard', 'group', 'skeleton'),
    ('skeleton', ),
    ('standard', 'pointwise', 'identity'),
    ('standard', 'standard', 'group', 'skeleton', 'pointwise', 'identity'),
]
# PD-B needs two branches to weight (a single one is refused at construction, see test_pd_conv)
SUBSETS_AND_MODES = [(b, m) for b in ABLATION for m in ('A', 'B') if m == 'A' or len(b) > 1]
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def make_layer(mode, branches=('standard', 'standard', 'group', 'skeleton'), cin=8, cout=8, k=3, stride=1,
               padding=None, dilation=1, groups=1, branch_groups=4, dtype=torch.float32, seed=0, **kwargs):
    """A layer with random BN statistics, a non-zero bias where it has one, and (PD-B) a refinement far
    from uniform weights, so that any error in folding, mixing or biases shows."""
    torch.manual_seed(seed)
    padding = dilation * (k // 2) if padding is None else padding
    layer = PDConv2d(cin, cout, k, stride=stride, padding=padding, dilation=dilation, groups=groups, mode=mode,
                     branches=branches, branch_groups=branch_groups, forward_path='branches', **kwargs)
    layer.init_weights()
    randomize_bn(layer, seed)
    with torch.no_grad():
        if layer.bias is not None:
            layer.bias.normal_()
        if mode == 'B':
            layer.refine.fc1.weight.normal_(0, 2.0)
            layer.refine.fc1.bias.uniform_(0.1, 0.5)  # no dead ReLU: every parameter gets a gradient
            layer.refine.fc2.weight.normal_(0, 2.0)
            layer.refine.fc2.bias.normal_(0, 1.0)
    return layer.to(dtype).eval()


def check_fused(layer, x, tol=None):
    with torch.no_grad():
        expected = layer(x)
        fused = copy.deepcopy(layer)
        assert switch_to_deploy(fused) == 1
        actual = fused(x)
    assert actual.shape == expected.shape
    err = max_rel_error(actual, expected)
    assert err <= (tol or TOL[x.dtype]), err
    return fused


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('branches,mode', SUBSETS_AND_MODES)
def test_every_branch_subset(branches, mode, dtype):
    layer = make_layer(mode, branches, dtype=dtype, bias=True)
    check_fused(layer, torch.randn(3, 8, 11, 14, dtype=dtype))


@pytest.mark.parametrize('mode', ['A', 'B'])
@pytest.mark.parametrize('batch,stride,k', list(itertools.product([1, 2, 3, 64], [1, 2], [3, 5])))
def test_batch_stride_kernel(mode, batch, stride, k):
    layer = make_layer(mode, k=k, stride=stride, cout=12)
    check_fused(layer, torch.randn(batch, 8, 13, 10))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('mode', ['A', 'B'])
@pytest.mark.parametrize('k,stride,dilation,padding', [
    (3, 1, 2, None),
    (5, 2, 2, None),
    (3, 1, 1, 0),  # less padding than 'same': the smaller kernels crop their input
    (5, 1, 2, 1),
    (3, 2, 1, 3),  # more padding than 'same'
    (3, 1, 1, (0, 2)),
])
def test_dilation_and_padding(mode, k, stride, dilation, padding, dtype):
    branches = ('standard', 'group', 'skeleton', 'pointwise') + (('identity', ) if stride == 1 else ())
    layer = make_layer(mode, branches, k=k, stride=stride, dilation=dilation, padding=padding, dtype=dtype)
    check_fused(layer, torch.randn(2, 8, 15, 12, dtype=dtype))


# (cin, cout, k, groups, branch_groups, branches): grouped, depthwise and 1x1 layers
LAYER_KINDS = [
    (8, 16, 3, 2, 4, ('standard', 'group', 'skeleton', 'pointwise')),
    (16, 16, 3, 4, 8, ('standard', 'standard', 'group', 'skeleton', 'pointwise', 'identity')),
    (12, 12, 3, 12, 12, ('standard', 'skeleton', 'pointwise', 'identity')),  # depthwise
    (12, 24, 5, 12, 12, ('standard', 'standard', 'skeleton', 'pointwise')),  # depthwise, channel multiplier 2
    (8, 12, 1, 1, 4, ('standard', 'standard', 'group')),  # 1x1
    (8, 8, 1, 2, 4, ('standard', 'group', 'identity')),  # grouped 1x1
]


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('mode', ['A', 'B'])
@pytest.mark.parametrize('cin,cout,k,groups,branch_groups,branches', LAYER_KINDS)
@pytest.mark.parametrize('batch,stride,dilation', [(1, 1, 1), (3, 2, 1), (2, 1, 2)])
def test_grouped_depthwise_and_pointwise_layers(cin, cout, k, groups, branch_groups, branches, mode, dtype, batch,
                                                stride, dilation):
    if stride > 1:
        branches = tuple(b for b in branches if b != 'identity')
    layer = make_layer(mode, branches, cin=cin, cout=cout, k=k, groups=groups, branch_groups=branch_groups,
                       stride=stride, dilation=dilation, dtype=dtype, bias=True)
    check_fused(layer, torch.randn(batch, cin, 9, 12, dtype=dtype))


@pytest.mark.parametrize('mode', ['A', 'B'])
def test_batch_equal_to_channel_count(mode):
    layer = make_layer(mode)
    check_fused(layer, torch.randn(8, 8, 9, 9))


@pytest.mark.parametrize('mode', ['A', 'B'])
def test_samples_are_independent(mode):
    """Each sample's output depends on that sample alone, as in the unfused network."""
    fused = check_fused(make_layer(mode), torch.randn(4, 8, 9, 9))
    x = torch.randn(4, 8, 9, 9)
    with torch.no_grad():
        together = fused(x)
        alone = torch.cat([fused(x[i:i + 1]) for i in range(4)])
    assert max_rel_error(together, alone) <= 1e-5


@pytest.mark.parametrize('temperature', [0.3, 1.0, 7.0])
def test_pd_b_is_exact_at_any_temperature(temperature):
    layer = make_layer('B', temperature=temperature, bias=True)
    fused = check_fused(layer, torch.randn(3, 8, 9, 9))
    assert fused.fused.refine.temperature == pytest.approx(temperature, rel=1e-7)  # a float32 buffer


def test_temperature_flattens_the_branch_weights():
    layer = make_layer('B')
    x = torch.randn(5, 8, 9, 9)
    with torch.no_grad():
        sharp = layer.refine(x)
        layer.refine.temperature = 30.0
        flat = layer.refine(x)
    assert flat.shape == (5, 4) and torch.allclose(flat.sum(1), torch.ones(5))
    assert (flat - 0.25).abs().max() < (sharp - 0.25).abs().max()


@pytest.mark.parametrize('mode', ['A', 'B'])
def test_online_fused_path_matches_branches_in_eval(mode):
    layer = make_layer(mode, bias=True)
    x = torch.randn(3, 8, 10, 9)
    with torch.no_grad():
        expected = layer(x)
        layer.forward_path = 'auto'
        actual = layer(x)
    assert max_rel_error(actual, expected) <= 1e-5


def test_hooks_on_the_refinement_see_the_deployed_forward():
    """Tools read PD-B's branch weights with forward hooks on the refinement module
    (tools/analysis_tools/plot_curves.py); the deployed layer runs the same module."""
    layer = make_layer('B')
    switch_to_deploy(layer)
    seen = []
    layer.fused.refine.register_forward_hook(lambda module, inputs, out: seen.append(out))
    with torch.no_grad():
        layer(torch.randn(3, 8, 9, 9))
    assert len(seen) == 1 and seen[0].shape == (3, 4)
    assert torch.allclose(seen[0].sum(1), torch.ones(3))


def test_deployed_pd_b_model_converts_to_channels_last():
    """``model.to(memory_format=torch.channels_last)`` converts 4-D parameters and fails on 5-D ones: a
    deployed PD-B layer stores its kernels 4-D, so it converts and gives the same outputs."""
    layer = make_layer('B')
    switch_to_deploy(layer)
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        expected = layer(x)
        layer.to(memory_format=torch.channels_last)
        assert layer.fused.weight.is_contiguous(memory_format=torch.channels_last)
        assert max_rel_error(layer(x.to(memory_format=torch.channels_last)), expected) <= 1e-6
        assert max_rel_error(layer(x), expected) <= 1e-6
