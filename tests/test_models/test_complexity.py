"""Deployed PD classifiers against the seed's table (ImageNet, 224x224), counted by mmengine.

Seed table (003, README of the reference code): ResNet-18 / PD-A-ResNet-18: 1.822 GFLOPs, 11.690M
params; PD-B-ResNet-18: 1.822 GFLOPs, 11.762M; ResNet-50 / PD-A-ResNet-50: 4.122 GFLOPs, 25.557M;
PD-B-ResNet-50: 4.122 GFLOPs, 25.636M. The PD-B deploy form stores every branch's folded kernel, so
its stored total is larger; the seed's PD-B figure is the plain network plus the refinement modules
(the weights one image is convolved with), which is what is checked. The stored total and mmengine's
FLOPs of the deployed PD-B models are printed.
"""
import pytest
import torch
from mmengine.analysis import get_model_complexity_info, parameter_count

import pddr_mm
from _helpers import build_classifier, load_cfg
from pddr_mm.ops import Refinement

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


@pytest.mark.parametrize('depth', [18, 50])
def test_pd_b_plain_plus_refinement_matches_seed_table(depth):
    plain = _plain(depth)
    plain_m = parameter_count(plain)[''] / 1e6
    model = _deployed(depth, 'B')
    refines = [m for m in model.modules() if isinstance(m, Refinement)]
    assert len(refines) == 16
    refine_m = sum(parameter_count(m)[''] for m in refines) / 1e6
    seed_gflops, seed_mparams = SEED[(depth, 'B')]
    gflops, stored_m = _count(model)
    print(f'\nPD-B-ResNet-{depth}: plain {plain_m:.3f}M + refinement {refine_m:.3f}M = {plain_m + refine_m:.3f}M '
          f'(seed {seed_mparams}M); deployed model as stored: {stored_m:.3f}M params, {gflops:.3f} GFLOPs by '
          f'mmengine (seed {seed_gflops}G)')
    assert abs(plain_m + refine_m - seed_mparams) <= REL * seed_mparams
    assert stored_m > plain_m + refine_m  # B folded kernels per layer are stored
