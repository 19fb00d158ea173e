"""Deployed PD classifiers against the seed's table (ImageNet, 224x224), counted by mmengine.

Seed table (003, README of the reference code): ResNet-18 / PD-A-ResNet-18: 1.822 GFLOPs, 11.690M
params; PD-B-ResNet-18: 1.822 GFLOPs, 11.762M; ResNet-50 / PD-A-ResNet-50: 4.122 GFLOPs, 25.557M;
PD-B-ResNet-50: 4.122 GFLOPs, 25.636M. The PD-B deploy form stores every branch's folded kernel, so
its stored total is larger; the seed's PD-B figure is the plain network plus the refinement modules
(the weights one image is convolved with), which is what is checked, on the fused model itself.
"""
import pytest
import torch
from mmengine.analysis import FlopAnalyzer, get_model_complexity_info, parameter_count

import pddr_mm
from _helpers import build_classifier, load_cfg
from pddr_mm.ops import MixedConv2d, Refinement

SEED = {  # (depth, mode): (GFLOPs, M params) from the seed's table
    (18, 'A'): (1.822, 11.690), (18, 'B'): (1.822, 11.762),
    (50, 'A'): (4.122, 25.557), (50, 'B'): (4.122, 25.636),
}
REL = 1e-3  # 0.1 %
# mmengine's counter gives the PLAIN ResNet-18 1.819 GFLOPs (seed 1.822): the seed's counter also counts
# element-wise ops (ReLU, residual adds, max-pool) that mmengine skips, while mmengine counts BN, so the
# deployed net (its block BNs folded away) counts slightly less than the plain one. FLOPs are held to
# 0.5 % against the seed's figure and to [plain - 0.5 %, plain] against the plain network.
SEED_FLOPS_REL = 5e-3


def _deployed(depth: int, mode: str):
    model = build_classifier(load_cfg(f'resnet/pd-{mode.lower()}-resnet{depth}_8xb32_in1k.py').model,
                             num_classes=None)  # the config's 1000 classes, as in the table
    model.eval()
    assert pddr_mm.switch_to_deploy(model) == 16
    return model


def _count(model):
    with torch.no_grad():
        info = get_model_complexity_info(model, input_shape=(3, 224, 224), show_table=False, show_arch=False)
    return info['flops'] / 1e9, info['params'] / 1e6


def _plain(depth: int):
    model = build_classifier(load_cfg(f'resnet/resnet{depth}_8xb32_in1k.py').model, num_classes=None)
    model.eval()
    return model


@pytest.mark.parametrize('depth', [18, 50])
def test_pd_a_deployed_matches_seed_table(depth):
    gflops, mparams = _count(_deployed(depth, 'A'))
    plain_gflops, plain_mparams = _count(_plain(depth))
    seed_gflops, seed_mparams = SEED[(depth, 'A')]
    print(f'\nPD-A-ResNet-{depth} deployed: {mparams:.3f}M params, {gflops:.3f} GFLOPs; plain ResNet-{depth} '
          f'{plain_mparams:.3f}M, {plain_gflops:.3f} GFLOPs (mmengine); seed {seed_mparams}M, {seed_gflops}G')
    assert abs(mparams - seed_mparams) <= REL * seed_mparams
    assert plain_gflops * (1 - SEED_FLOPS_REL) <= gflops <= plain_gflops
    assert abs(gflops - seed_gflops) <= SEED_FLOPS_REL * seed_gflops


def _per_image_params(model) -> float:
    """Parameters one image meets: a deployed PD-B layer stores one folded kernel and bias per branch but
    convolves each image with one mix of them, so (branches - 1) of its kernels and biases do not count."""
    total = parameter_count(model)['']
    for m in model.modules():
        if isinstance(m, MixedConv2d):
            total -= (m.weight.numel() + m.bias.numel()) * (m.num_branches - 1) // m.num_branches
    return total / 1e6


def _flops_by_operator(model):
    with torch.no_grad():
        analyzer = FlopAnalyzer(model, (torch.randn(1, 3, 224, 224), ))
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return analyzer.by_operator()


@pytest.mark.parametrize('depth', [18, 50])
def test_pd_b_deployed_per_image_params_and_conv_flops(depth):
    """On the fused PD-B model itself: one image meets the plain network's kernels plus the refinement
    modules (the seed's PD-B parameter figure), and its convolutions cost exactly the fused PD-A ones and
    the plain network's; the mixing and refinement are matrix products, reported beside them."""
    pd_b, pd_a = _deployed(depth, 'B'), _deployed(depth, 'A')
    refines = [m for m in pd_b.modules() if isinstance(m, Refinement)]
    assert len(refines) == 16
    per_image = _per_image_params(pd_b)
    seed_gflops, seed_mparams = SEED[(depth, 'B')]
    plain_m = parameter_count(_plain(depth))[''] / 1e6
    refine_m = sum(parameter_count(m)[''] for m in refines) / 1e6
    ops_b, ops_a = _flops_by_operator(pd_b), _flops_by_operator(pd_a)
    extra = {k: v / 1e9 for k, v in ops_b.items() if k != 'conv'}
    print(f'\nPD-B-ResNet-{depth} deployed: {per_image:.3f}M params per image (plain {plain_m:.3f}M + refinement '
          f'{refine_m:.3f}M; seed {seed_mparams}M), {parameter_count(pd_b)[""] / 1e6:.3f}M stored; conv '
          f'{ops_b["conv"] / 1e9:.3f} GFLOPs (= PD-A {ops_a["conv"] / 1e9:.3f}, seed {seed_gflops}); other ops '
          f'(GFLOPs): {extra}')
    assert abs(per_image - seed_mparams) <= REL * seed_mparams
    assert ops_b['conv'] == ops_a['conv'] == _flops_by_operator(_plain(depth))['conv']
    # and the BNs left outside the PD layers (1x1 convs, downsamples) too: PD-B costs PD-A's FLOPs, held
    # to the seed's figure (which PD-B shares) by test_pd_a_deployed_matches_seed_table, plus the mixing
    # and refinement reported above
    assert ops_b['batch_norm'] == ops_a['batch_norm']
