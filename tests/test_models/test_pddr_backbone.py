"""PDDRBackbone on backbones no one here wrote (mmdet's and mmpretrain's), each checked end to end.

Per backbone, PD-A and PD-B: it builds (pairs found from a traced forward, the count printed), a training
step (forward, backward, SGD step) runs and moves the PDDR parameters, the fused network equals the
unfused one (random BN statistics and affine parameters everywhere, eval mode), and a plain network's
state dict (random weights and BN statistics) loaded into the PDDR one reproduces the plain outputs,
before and after fusion. Deployed parameters and FLOPs (mmengine's counter) are compared with the plain
network whose converted pairs are folded (conv + bias, the BN gone): deployed PD-A equals it exactly,
deployed PD-B's per-image weights equal it plus the refinement modules.

Small widths and 64x64 inputs where the backbone allows (EfficientFormer's attention needs 224x224).
"""
import copy
import time
from typing import Dict, List

import pytest
import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer
from mmengine.registry import MODELS, DefaultScope

import pddr_mm
from _helpers import flatten
from pddr_mm.ops import PDConv2d, Refinement
from random_bn import max_rel_error, randomize_bn

TOL = 1e-5
_HRNET_EXTRA = dict(
    stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK', num_blocks=(1, ), num_channels=(8, )),
    stage2=dict(num_modules=1, num_branches=2, block='BASIC', num_blocks=(1, 1), num_channels=(8, 16)),
    stage3=dict(num_modules=1, num_branches=3, block='BASIC', num_blocks=(1, 1, 1), num_channels=(8, 16, 32)),
    stage4=dict(num_modules=1, num_branches=4, block='BASIC', num_blocks=(1, 1, 1, 1),
                num_channels=(8, 16, 32, 64)))
# (id, scope, inner backbone config, input size)
CASES = [
    ('mmdet-ResNeXt', 'mmdet', dict(type='ResNeXt', depth=50, groups=4, base_width=4, base_channels=16,
                                    norm_eval=False), 64),
    ('mmdet-RegNet', 'mmdet', dict(type='RegNet', arch='regnetx_400mf', norm_eval=False), 64),
    ('mmdet-Res2Net', 'mmdet', dict(type='Res2Net', depth=50, base_channels=16, base_width=8, norm_eval=False), 64),
    ('mmdet-HRNet', 'mmdet', dict(type='HRNet', extra=_HRNET_EXTRA, norm_eval=False), 64),
    ('mmdet-MobileNetV2', 'mmdet', dict(type='MobileNetV2', widen_factor=0.5, norm_eval=False), 64),
    ('mmdet-CSPDarknet', 'mmdet', dict(type='CSPDarknet', deepen_factor=0.33, widen_factor=0.25), 64),
    ('mmpretrain-MobileViT-xx_small', 'mmpretrain', dict(type='MobileViT', arch='xx_small'), 64),
    ('mmpretrain-MobileViT-x_small', 'mmpretrain', dict(type='MobileViT', arch='x_small'), 64),
    ('mmpretrain-MobileViT-small', 'mmpretrain', dict(type='MobileViT', arch='small'), 64),
    ('mmpretrain-MobileNetV2', 'mmpretrain', dict(type='MobileNetV2', widen_factor=0.5), 64),
    ('mmpretrain-EfficientFormer', 'mmpretrain',
     dict(type='EfficientFormer', arch=dict(layers=[1, 1, 1, 1], embed_dims=[16, 32, 48, 64],
                                            downsamples=[False, True, True, True], vit_num=1)), 224),
    ('mmpretrain-RegNet', 'mmpretrain', dict(type='RegNet', arch='regnetx_400mf'), 64),
]


pytestmark = pytest.mark.usefixtures('one_thread')  # tiny networks: see conftest.py


def _build(scope: str, cfg: Dict, seed: int = 0) -> nn.Module:
    import importlib
    importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(copy.deepcopy(cfg))


def _pd_cfg(cfg: Dict, mode: str, size: int) -> Dict:
    return dict(type='PDDRBackbone', backbone=cfg, mode=mode, trace_shape=(size, size))


def _forward(model: nn.Module, x: torch.Tensor) -> List[torch.Tensor]:
    with torch.no_grad():
        return flatten(model(x))


def _err(actual: List[torch.Tensor], expected: List[torch.Tensor]) -> float:
    assert len(actual) == len(expected) > 0
    return max(max_rel_error(a, e) for a, e in zip(actual, expected))


def _pd_layers(model: nn.Module) -> List[PDConv2d]:
    return [m for m in model.modules() if isinstance(m, PDConv2d)]


def _train_step(model: nn.Module, x: torch.Tensor) -> None:
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    pd_params = [p for m in _pd_layers(model) for p in m.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in pd_params]
    optim = torch.optim.SGD(params, lr=0.1)
    loss = sum(t.float().square().mean() for t in flatten(model(x)))
    assert torch.isfinite(loss)
    loss.backward()
    optim.step()
    moved = sum(not torch.equal(b, p.detach()) for b, p in zip(before, pd_params))
    assert moved > 0, 'the training step moved no PDDR parameter'


@torch.no_grad()
def _fold_pairs(plain: nn.Module, pd_model: nn.Module) -> nn.Module:
    """The plain network with every pair converted in ``pd_model`` folded: conv + bias, BN -> Identity."""
    folded = copy.deepcopy(plain)
    folded.eval()  # mmdet's ResNet.train() returns None: no chaining
    for conv_name, info in pd_model.pddr_layers.items():
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(info['norm'])
        scale = bn.weight / (bn.running_var + bn.eps).sqrt()
        new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                        conv.dilation, conv.groups, bias=True)
        new.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        old_bias = conv.bias if conv.bias is not None else 0
        new.bias.copy_(bn.bias + (old_bias - bn.running_mean) * scale)
        pddr_mm.utils.set_module(folded, conv_name, new)
        pddr_mm.utils.set_module(folded, info['norm'], nn.Identity())
    return folded


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _flops(model: nn.Module, x: torch.Tensor) -> int:
    model.eval()
    analyzer = FlopAnalyzer(model, (x, ))
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return int(analyzer.total())


def _effective_pd_b_params(model: nn.Module) -> int:
    """Deployed PD-B parameters one image is convolved with: one kernel and bias per layer, and the
    refinement; the other branches' stored kernels are left out."""
    total = _params(model)
    for m in _pd_layers(model):
        one = m.out_channels * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1] + m.out_channels
        total -= _params(m) - (one + _params(m.refinement))
    return total


@pytest.mark.parametrize('name,scope,cfg,size', CASES, ids=[c[0] for c in CASES])
def test_pddr_backbone(name, scope, cfg, size):
    start = time.time()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    plain = _build(scope, cfg, seed=1)
    randomize_bn(plain, seed=2)
    plain.eval()
    expected = _forward(plain, x)
    plain_sd = plain.state_dict()
    line = [f'\n[pddr-backbone] {name} ({size}x{size}):']
    folded_counts = {}
    for mode in ('A', 'B'):
        model = _build(scope, _pd_cfg(cfg, mode, size))
        assert type(model) is type(plain)
        report = model.pddr_report
        layers = _pd_layers(model)
        assert len(layers) == len(report['converted']) == len(model.pddr_layers) > 0
        for conv_name, info in model.pddr_layers.items():
            assert isinstance(model.get_submodule(info['norm']), nn.Identity)
        start_model = copy.deepcopy(model)  # for the plain start, below

        _train_step(model, x)

        # fused == unfused, random BN statistics everywhere
        randomize_bn(model, seed=3)
        model.eval()
        for m in layers:
            m.forward_path = 'branches'
        unfused = _forward(model, x)
        pddr_mm.switch_to_deploy(model)
        fuse_err = _err(_forward(model, x), unfused)
        assert fuse_err <= TOL, f'fused vs unfused: {fuse_err:.2e}'

        # start from the plain network: same outputs, unfused and fused
        start_model.load_state_dict(plain_sd, strict=True)
        start_model.eval()
        for m in _pd_layers(start_model):
            m.forward_path = 'branches'
        start_err = _err(_forward(start_model, x), expected)
        pddr_mm.switch_to_deploy(start_model)
        start_fused_err = _err(_forward(start_model, x), expected)
        assert start_err <= TOL and start_fused_err <= TOL, (start_err, start_fused_err)

        # deployed complexity against the plain network with the same pairs folded
        pairs = tuple(model.pddr_layers)
        if pairs not in folded_counts:
            folded = _fold_pairs(plain, model)
            assert _err(_forward(folded, x), expected) <= TOL
            folded_counts[pairs] = (_params(folded), _flops(folded, x))
        folded_params, folded_flops = folded_counts[pairs]
        params, flops = _params(model), _flops(model, x)
        if mode == 'A':
            assert (params, flops) == (folded_params, folded_flops)
            extra = ''
        else:
            refine = sum(_params(m) for m in model.modules() if isinstance(m, Refinement))
            assert _effective_pd_b_params(model) == folded_params + refine
            extra = f' per image {folded_params + refine} = folded plain + refinement {refine},'

        kinds = ', '.join(f'{k}: {n}' for k, n in sorted(_count(report['converted'].values()).items()))
        line.append(f'\n  PD-{mode}: {len(layers)} converted ({kinds}), {len(report["plain"])} plain; '
                    f'fused-unfused {fuse_err:.1e}; plain start {start_err:.1e} (fused {start_fused_err:.1e}); '
                    f'deployed params {params} (plain {_params(plain)}, folded plain {folded_params}),{extra} '
                    f'FLOPs {flops} (folded plain {folded_flops})')
    print(''.join(line) + f'\n  {time.time() - start:.1f}s')


def _count(values) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _tool(name: str):
    """tools/<name>.py as a module (the tools are scripts, not a package)."""
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(__file__), '..', '..', 'tools', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f"pddr_tool_{name.replace('/', '_')}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_deployment_tools_on_a_pddr_backbone_config(tmp_path, capsys):
    """The deploy rewriting, tools/model_converters/reparameterize.py and tools/analysis_tools/get_flops.py
    and benchmark.py on a PDDRBackbone config (PD-B MobileViT-XXS): deploy=True builds the fused form, the
    plain baseline is the inner backbone."""
    from mmengine.config import Config

    from _helpers import CONFIG_DIR
    from pddr_mm.deployment import count_pddr_cfgs, deploy_model_cfg, plain_model_cfg
    from pddr_mm.deployment.checkpoint import build_model
    path = f'{CONFIG_DIR}/mobilevit/pd-b-mobilevit-xxsmall_8xb128_in1k.py'
    cfg = Config.fromfile(path)
    inner = dict(type='MobileViT', arch='xx_small')
    assert count_pddr_cfgs(cfg.model) == 1
    assert plain_model_cfg(cfg.model)['backbone'] == inner
    assert deploy_model_cfg(cfg.model)['backbone']['deploy'] is True

    model = build_model(cfg)
    num = len(model.backbone.pddr_layers)
    randomize_bn(model, seed=4)
    ckpt = str(tmp_path / 'epoch_1.pth')
    torch.save(dict(meta={}, state_dict=model.state_dict()), ckpt)
    deploy_cfg, deploy_ckpt = _tool('model_converters/reparameterize').main([path, ckpt, '--out-dir', str(tmp_path)])
    info = torch.load(deploy_ckpt)['meta']['pddr_deploy']
    assert info['fused_layers'] == num and info['check_error'] <= 1e-4
    deployed = build_model(Config.fromfile(deploy_cfg))
    deployed.load_state_dict(torch.load(deploy_ckpt)['state_dict'], strict=True)
    assert pddr_mm.is_deployed(deployed) and len(_pd_layers(deployed)) == num

    flops = _tool('analysis_tools/get_flops').main([path, '--shape', '64', '--deploy'])
    assert flops['flops'] > 0
    result = _tool('analysis_tools/benchmark').main([path, '--checkpoint', ckpt, '--shape', '64', '64',
                                                     '--repeat-num', '1', '--num-warmup', '0'])
    assert result['fused_layers'] == num
    inf = result['inference']
    # the baseline is the plain backbone with its BNs folded, as the fused model's remaining ones are
    from mmcv.cnn import fuse_conv_bn
    plain_backbone = _build('mmpretrain', inner)
    plain_backbone.eval()  # mmpretrain's backbones return None from train()
    fuse_conv_bn(plain_backbone)
    plain_params = _params(plain_backbone) + (inf['unfused']['params'] - _params(model.backbone))
    assert inf['baseline']['params'] == plain_params
    print(f"\n[pddr-backbone] PD-B MobileViT-XXS deploy check {info['check_error']:.1e}; 64x64 batch 1 latency ms "
          f"unfused {inf['unfused']['median_ms']:.1f} fused {inf['fused']['median_ms']:.1f} "
          f"plain {inf['baseline']['median_ms']:.1f} (1 repeat, not a measurement)")
