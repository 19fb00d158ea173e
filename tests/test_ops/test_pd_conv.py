"""PDConv2d construction, registry, errors, fusion state and gradients."""
import copy

import pytest
import torch
import torch.nn as nn
from mmcv.cnn import ConvModule, build_conv_layer
from mmengine.registry import DefaultScope

from pddr_mm import PDConv2d, switch_to_deploy
from pddr_mm.ops import MixedConv2d
from random_bn import max_rel_error, randomize_bn


@pytest.mark.parametrize('scope', ['mmdet', 'mmpretrain'])
@pytest.mark.parametrize('mode', ['A', 'B'])
def test_build_conv_layer_in_downstream_scopes(scope, mode):
    with DefaultScope.overwrite_default_scope(scope):
        layer = build_conv_layer(dict(type='PDConv2d', mode=mode), 64, 64, 3, padding=1)
        assert isinstance(layer, PDConv2d) and layer.mode == mode
        assert layer.branch_names == ('standard', 'standard', 'group', 'skeleton')
        assert layer(torch.randn(2, 64, 8, 8)).shape == (2, 64, 8, 8)


def test_conv_module_takes_pdconv_as_conv_cfg():
    with DefaultScope.overwrite_default_scope('mmdet'):
        m = ConvModule(16, 32, 3, stride=2, padding=1, conv_cfg=dict(type='PDConv2d', mode='B', branch_groups=8),
                       norm_cfg=None)
    assert isinstance(m.conv, PDConv2d) and m.conv.bias is not None  # bias='auto' without norm
    m.init_weights()
    assert m(torch.randn(2, 16, 9, 9)).shape == (2, 32, 5, 5)
    randomize_bn(m)
    with torch.no_grad():
        m.conv.bias.normal_()  # a mis-applied bias must show
    m.eval()
    x = torch.randn(2, 16, 9, 9)
    m.conv.forward_path = 'branches'
    with torch.no_grad():
        expected = m(x)
        assert switch_to_deploy(m) == 1
        assert max_rel_error(m(x), expected) <= 1e-5


@pytest.mark.parametrize('mode', ['A', 'B'])
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_conv_module_norm_folds_into_the_deployed_layer(mode, dtype, tol):
    """The ConvModule's BN after a conv_cfg-swapped PDConv2d folds into its deploy form (scale and shift,
    for PD-B into every branch); a pre-norm ConvModule and a GN are left alone."""
    from pddr_mm.ops import fuse_pd_conv_bn
    pd = dict(type='PDConv2d', mode=mode, branch_groups=4)
    with DefaultScope.overwrite_default_scope('mmdet'):
        post = ConvModule(8, 12, 3, stride=2, padding=1, conv_cfg=pd, norm_cfg=dict(type='BN'))
        pre = ConvModule(8, 8, 3, padding=1, conv_cfg=pd, norm_cfg=dict(type='BN'), order=('norm', 'conv', 'act'))
        gn = ConvModule(12, 12, 3, padding=1, conv_cfg=pd, norm_cfg=dict(type='GN', num_groups=4))
    model = nn.Sequential(pre, post, gn).to(dtype)
    randomize_bn(model, 3).eval()
    x = torch.randn(3, 8, 11, 7, dtype=dtype)
    with torch.no_grad():
        assert fuse_pd_conv_bn(model) == 0  # nothing deployed yet: nothing folds
        expected = model(x)
        switch_to_deploy(model)
        assert fuse_pd_conv_bn(model) == 1 and fuse_pd_conv_bn(model) == 0
        assert isinstance(post.norm, nn.Identity)
        assert isinstance(pre.norm, nn.BatchNorm2d) and isinstance(gn.norm, nn.GroupNorm)
        assert max_rel_error(model(x), expected) <= tol


def test_folding_a_norm_needs_the_deploy_form_and_a_matching_eval_bn():
    layer = PDConv2d(8, 12, 3, padding=1, branch_groups=4).eval()
    with pytest.raises(RuntimeError, match='switch_to_deploy'):
        layer.fold_following_bn(nn.BatchNorm2d(12).eval())
    switch_to_deploy(layer)
    with pytest.raises(ValueError, match='8 channels cannot follow a layer with 12'):
        layer.fold_following_bn(nn.BatchNorm2d(8).eval())
    with pytest.raises(RuntimeError, match='training mode'):
        layer.fold_following_bn(nn.BatchNorm2d(12))


@pytest.mark.parametrize('kwargs,words', [
    (dict(in_channels=48, out_channels=64, branch_groups=64), ["'group'", 'branch_groups=64', 'in_channels=48']),
    (dict(kernel_size=4), ['kernel_size', 'odd']),
    (dict(norm_cfg=dict(type='GN', num_groups=8)), ['norm_cfg', "'GN'", 'BN']),
    (dict(norm_cfg=dict(type='LN')), ['norm_cfg', "'LN'"]),
    (dict(norm_cfg=dict(type='BN', track_running_stats=False)), ['norm_cfg', "'BN'"]),
    (dict(branches=('standard', 'dense')), ["'dense'", 'skeleton', 'register']),
    (dict(branches=('standard', 5)), ['registered name or a dict']),
    (dict(branches=()), ['branches', 'non-empty']),
    (dict(branches='standard'), ['branches']),
    (dict(mode='C'), ['mode', "'A'", "'B'"]),
    (dict(mode='B', branches=('standard', )), ["mode='B'", 'two branches']),
    (dict(groups=3), ['groups=3', 'divide']),
    (dict(groups=2, branch_groups=3), ["'group'", 'branch_groups=3', 'multiple']),
    (dict(groups=64, branches=('standard', 'group')), ["'group'", 'depthwise']),
    (dict(kernel_size=1, padding=0, branches=('standard', 'skeleton')), ["'skeleton'", '3x3']),
    (dict(kernel_size=1, padding=0, branches=('standard', 'pointwise')), ["'pointwise'", '1x1']),
    (dict(out_channels=32, branches=('standard', 'identity')), ["'identity'", 'in_channels == out_channels']),
    (dict(stride=2, branches=('standard', 'identity')), ["'identity'", 'stride']),
    (dict(padding=-1), ['padding']),
    (dict(stride=0), ['stride']),
    (dict(reduction=0), ['reduction']),
    (dict(temperature=0), ['temperature']),
    (dict(forward_path='fast'), ['forward_path', "'auto'"]),
])
@pytest.mark.parametrize('deploy', [False, True])
def test_bad_configuration_raises_clear_value_error(kwargs, words, deploy):
    args = dict(in_channels=64, out_channels=64, kernel_size=3, padding=1, deploy=deploy)
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        PDConv2d(**args)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_group_branch_is_optional_for_indivisible_channels():
    layer = PDConv2d(48, 40, 3, padding=1, branches=('standard', 'skeleton'))
    assert layer(torch.randn(1, 48, 5, 5)).shape == (1, 40, 5, 5)


@pytest.mark.parametrize('mode', ['A', 'B'])
def test_fusing_in_training_mode_raises(mode):
    layer = PDConv2d(8, 8, 3, padding=1, mode=mode, branch_groups=4)
    with pytest.raises(RuntimeError, match='eval'):
        layer.switch_to_deploy()
    with pytest.raises(RuntimeError, match='eval'):
        switch_to_deploy(nn.Sequential(layer))
    assert not layer.deploy and hasattr(layer, 'branches')


@pytest.mark.parametrize('mode', ['A', 'B'])
def test_fusion_is_idempotent_and_leaves_no_branch_state(mode):
    model = nn.Sequential(PDConv2d(8, 8, 3, padding=1, mode=mode, branch_groups=4),
                          PDConv2d(8, 8, 3, padding=1, mode=mode, branch_groups=4)).eval()
    randomize_bn(model)
    x = torch.randn(2, 8, 7, 7)
    assert switch_to_deploy(model) == 2
    with torch.no_grad():
        once = model(x)
    assert switch_to_deploy(model) == 0
    with torch.no_grad():
        assert torch.equal(model(x), once)
    keys = set(model.state_dict())
    assert not any('branches' in k or 'bn' in k for k in keys), keys
    if mode == 'A':
        assert all(type(m.fused) is nn.Conv2d for m in model)
        assert keys == {f'{i}.fused.{p}' for i in range(2) for p in ('weight', 'bias')}
    else:
        assert all(type(m.fused) is MixedConv2d for m in model)
        assert keys == {f'{i}.fused.{p}' for i in range(2) for p in
                        ('weight', 'bias', 'refine.fc1.weight', 'refine.fc1.bias', 'refine.fc2.weight', 'refine.fc2.bias')}


def test_fused_pd_a_costs_a_plain_conv():
    from mmengine.analysis import get_model_complexity_info
    layer = PDConv2d(32, 64, 3, stride=2, padding=1, branch_groups=8).eval()
    plain = nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=True).eval()
    switch_to_deploy(layer)
    fused_info = get_model_complexity_info(layer, (32, 28, 28), show_table=False, show_arch=False)
    plain_info = get_model_complexity_info(plain, (32, 28, 28), show_table=False, show_arch=False)
    assert fused_info['params'] == plain_info['params'] == 64 * 32 * 9 + 64
    assert fused_info['flops'] == plain_info['flops'] > 0


def test_fused_pd_b_stores_one_kernel_per_branch_and_the_refinement():
    """PD-B: each sample meets one kernel of a plain conv's size, mixed from the folded branch kernels
    (each in the layer's window and grouping) with the refinement's weights."""
    layer = PDConv2d(32, 64, 3, padding=1, groups=2, mode='B', branch_groups=8).eval()
    refine_params = sum(p.numel() for p in layer.refine.parameters())
    assert refine_params == (32 * 2 + 2) + (2 * 4 + 4)
    switch_to_deploy(layer)
    assert layer.fused.weight.shape == (4 * 64, 16, 3, 3) and layer.fused.bias.shape == (4, 64)
    assert sum(p.numel() for p in layer.fused.refine.parameters()) == refine_params


@pytest.mark.parametrize('mode', ['A', 'B'])
def test_gradients_reach_every_branch_in_training(mode):
    # seeded, and 4 hidden units (reduction 2): with the default single one (8 // 16), a ReLU that happened to
    # be dead for the whole batch zeroed fc1's gradient now and then
    torch.manual_seed(0)
    layer = PDConv2d(8, 8, 3, padding=1, mode=mode, branch_groups=4, reduction=2).train()
    layer(torch.randn(4, 8, 6, 6)).square().mean().backward()
    names = [name for name, _ in layer.named_parameters()]
    assert ('refine.fc1.weight' in names) == (mode == 'B')
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_deploy_flag_builds_the_fused_form_and_loads_a_fused_state():
    layer = PDConv2d(8, 8, 3, padding=1, mode='B', branch_groups=4).eval()
    randomize_bn(layer)
    x = torch.randn(2, 8, 6, 6)
    deployed = copy.deepcopy(layer)
    switch_to_deploy(deployed)
    fresh = PDConv2d(8, 8, 3, padding=1, mode='B', branch_groups=4, deploy=True).eval()
    assert fresh.deploy and not hasattr(fresh, 'branches')
    fresh.load_state_dict(deployed.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x), deployed(x))


def test_plain_weights_into_a_pd_layer_without_a_plain_start_say_what_to_do():
    """A plain FPN / head / conv_cfg conv has no BN to split into branches: loading it is an error that says
    which modules do start from plain weights and how to load only the backbone."""
    layer = PDConv2d(8, 8, 3, padding=1, branch_groups=4)
    expected = r"plain convolution here\. Only PDResNet and PDDRBackbone .*prefix='backbone\.'"
    with pytest.raises(RuntimeError, match=expected):
        layer.load_state_dict(nn.Conv2d(8, 8, 3, padding=1).state_dict())
