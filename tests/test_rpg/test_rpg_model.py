"""RPGBackbone and RPGConv2d: what is converted, the ring's uses and gradient, the state dict, checkpoints."""
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from rpg_fixtures import RESNET, kernel_elements, rpg_layers, rpg_resnet

from pddr_mm.rpg import ModelRing, RPGBackbone, convert_to_rpg


def test_every_conv_but_the_stem_is_generated_and_bn_is_never_shared(caplog):
    model = rpg_resnet()
    layers = rpg_layers(model)
    report = model.rpg_report
    assert len(layers) == 19 and 'conv1' not in layers and isinstance(model.conv1, nn.Conv2d)
    assert report['plain'] == {'conv1': 'stem (reads the network input)'}
    assert sum(k == '1x1' for k in report['converted'].values()) == 3  # the downsample convs
    t = kernel_elements(model)
    assert report['kernel_elements'] == t and report['ring_size'] == round(t / 4) == model.rpg.rings[0].numel()
    assert all(isinstance(m, nn.BatchNorm2d) for n, m in model.named_modules() if 'bn' in n.split('.')[-1])
    assert type(model).__name__ == 'ResNet'  # the inner backbone itself


def test_ring_gradient_is_the_sum_over_its_uses_of_sign_times_scale_times_the_kernel_gradient():
    model = rpg_resnet(ring_ratio=0.1)
    layers = list(rpg_layers(model).values())
    kernels = {}
    for layer in layers:  # the forward uses these very kernel tensors, so their gradients can be read
        kernels[layer] = layer.kernel()
        layer.kernel = lambda layer=layer: kernels[layer]
        assert torch.equal(layer.coef.abs(), torch.full_like(layer.coef, layer.scale))  # a sign times the scale
    out = model(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    loss = sum((o * torch.randn_like(o)).sum() for o in out)
    ring = model.rpg.rings[0]
    grads = torch.autograd.grad(loss, [ring, *kernels.values()])
    expected = torch.zeros_like(ring, dtype=torch.float64)
    for layer, g in zip(layers, grads[1:]):
        expected.index_add_(0, layer.index.long(), (layer.coef * g.flatten()).double())
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[0].double(), expected, rtol=1e-5, atol=1e-6 * expected.abs().max().item())


def test_each_kernel_has_its_own_kaiming_fan_out_std():
    model = rpg_resnet(ring_ratio=1)
    for layer in rpg_layers(model).values():
        fan_out = layer.weight_shape[0] * layer.weight_shape[2] * layer.weight_shape[3]
        std = layer.kernel().std().item()
        assert abs(std / (2 / fan_out)**0.5 - 1) < 0.25, (layer, std)


def test_state_dict_holds_the_ring_and_no_tensor_of_t_elements():
    from mmdet.models.backbones import ResNet
    model = rpg_resnet()
    t, n = kernel_elements(model), model.rpg.rings[0].numel()
    state = model.state_dict()
    assert max(v.numel() for v in state.values()) < t
    assert not any(k.endswith(('.index', '.coef')) for k in state)
    assert 'rpg.rings.0' in state and 'rpg.record' in state and 'layer1.0.bn1.weight' in state
    plain = sum(p.numel() for p in ResNet(**{k: v for k, v in RESNET.items() if k != 'type'}).parameters())
    assert sum(p.numel() for p in model.parameters()) == plain - t + n  # the kernels' T became the ring's N


_FINGERPRINT = '''
import sys, torch
sys.path.insert(0, sys.argv[1])
from rpg_fixtures import rpg_resnet, rpg_layers
model = rpg_resnet(seed=int(sys.argv[2]), torch_seed=123)
layers = rpg_layers(model).values()
print(float(sum((m.index.double() * m.coef.double()).sum() * (i + 1) for i, m in enumerate(layers))))
'''


def _fingerprint(model) -> float:
    layers = rpg_layers(model).values()
    return float(sum((m.index.double() * m.coef.double()).sum() * (i + 1) for i, m in enumerate(layers)))


def test_same_seed_same_model_in_another_process_other_seed_another_model(tmp_path):
    import os.path as osp
    here = osp.dirname(osp.abspath(__file__))
    ours = rpg_resnet(seed=0)
    out = subprocess.run([sys.executable, '-c', _FINGERPRINT, here, '0'], capture_output=True, text=True, check=True)
    assert float(out.stdout.split()[-1]) == _fingerprint(ours)
    other = rpg_resnet(seed=1)
    assert _fingerprint(other) != _fingerprint(ours)
    # a checkpoint restores the ring: a fresh model (other initial ring) computes the same after loading
    x = torch.randn(2, 3, 32, 32)
    fresh = rpg_resnet(seed=0, torch_seed=5)
    assert not torch.equal(fresh.rpg.rings[0], ours.rpg.rings[0])
    torch.save(ours.state_dict(), tmp_path / 'ring.pth')
    fresh.load_state_dict(torch.load(tmp_path / 'ring.pth', weights_only=True))
    ours.eval()  # mmdet's ResNet.train() returns None: one call a line
    fresh.eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(ours(x), fresh(x)))


@pytest.mark.parametrize('other', [dict(seed=1), dict(ring_ratio=0.5), dict(permutation='block'),
                                   dict(rings='stage'), dict(backbone=dict(base_channels=16))])
def test_checkpoint_of_another_generation_is_refused(other):
    state = rpg_resnet(**other).state_dict()
    with pytest.raises(ValueError, match='rpg.record: the checkpoint was made with another RPG generation'):
        rpg_resnet().load_state_dict(state)


def test_plain_checkpoint_cannot_initialise_the_ring():
    from mmdet.models.backbones import ResNet
    plain = ResNet(**{k: v for k, v in RESNET.items() if k != 'type'})
    with pytest.raises(ValueError, match='layer1.0.conv1.weight: the checkpoint holds a plain kernel'):
        rpg_resnet().load_state_dict(plain.state_dict(), strict=False)


@pytest.mark.parametrize('kwargs,words', [
    (dict(ring_ratio=0), r'ring_ratio must be a number in \(0, 1\]'),
    (dict(ring_ratio=1.5), r'ring_ratio must be a number in \(0, 1\]'),
    (dict(ring_ratio=-0.25), r'ring_ratio must be a number in \(0, 1\]'),
    (dict(ring_ratio=None, ring_size=0), 'ring_size must be a positive int'),
    (dict(ring_ratio=None, ring_size=-5), 'ring_size must be a positive int'),
    (dict(ring_ratio=None, ring_size=10**9), 'ring_size=1000000000 is larger than the 174336 kernel elements'),
    (dict(ring_ratio=None), 'give exactly one of ring_size'),
    (dict(ring_ratio=0.25, ring_size=100), 'give exactly one of ring_size'),
    (dict(rings='local'), "rings must be one of \\('global', 'stage'\\)"),
    (dict(permutation='random'), "permutation must be one of \\('full', 'block'\\)"),
    (dict(seed=-1), r'seed must be an int in \[0, 2\*\*32\)'),
    (dict(include='layer1'), 'include must be a list of regular expressions'),
])
def test_bad_arguments_raise_a_value_error_naming_them(kwargs, words):
    with pytest.raises(ValueError, match=words):
        rpg_resnet(**kwargs)


def test_nothing_to_convert_is_an_error():
    from pddr_mm.surgery import NothingConvertedError
    with pytest.raises(NothingConvertedError, match=r"RPGBackbone converted no convolution of ResNet .*not matched by "
                       r'include.*Check include / exclude'):
        rpg_resnet(include=['no_such_layer'])


def test_stage_rings_frozen_stages_and_include():
    model = rpg_resnet(rings='stage', ring_size=1000)
    rings = model.rpg.rings
    assert len(rings) == 4 and sum(r.numel() for r in rings) == 1000
    for ring_id, ring in enumerate(rings):  # each stage's layers read only their own ring, evenly
        layers = [m for m in rpg_layers(model).values() if m.ring_id == ring_id]
        stages = {n.split('.')[0] for n, m in rpg_layers(model).items() if m.ring_id == ring_id}
        assert stages == {f'layer{ring_id + 1}'}
        uses = np.bincount(torch.cat([m.index for m in layers]).numpy(), minlength=ring.numel())
        t = sum(m.index.numel() for m in layers)
        assert set(np.unique(uses)) <= {t // ring.numel(), t // ring.numel() + 1}
    frozen = rpg_resnet(backbone=dict(frozen_stages=1))  # a frozen stage keeps its own (frozen) weights
    assert frozen.rpg_report['plain']['layer1.0.conv1'].startswith('frozen') and 'layer2.0.conv1' in rpg_layers(frozen)
    stem_too = rpg_resnet(include=['conv'])
    assert 'conv1' in rpg_layers(stem_too)


def test_grouped_depthwise_and_1x1_convs_are_generated_and_deploy_exactly():
    import pddr_mm
    from random_bn import max_rel_error, randomize_bn
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 16, 3, padding='same', groups=4, bias=False), nn.BatchNorm2d(16),
                        nn.Conv2d(16, 4, 1, bias=True))
    report = convert_to_rpg(net, torch.randn(2, 3, 8, 8), ring_ratio=0.5, permutation='block', log=False)
    assert report['converted'] == {'3': '3x3 depthwise', '6': '3x3 groups=4', '8': '1x1'}
    assert isinstance(net.rpg, ModelRing) and net[8].bias is not None
    randomize_bn(net).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = net(x)
        assert pddr_mm.switch_to_deploy(net) == 3 and not hasattr(net, 'rpg')
        assert max_rel_error(net(x), expected) <= 1e-5
    assert type(net[6]) is nn.Conv2d and net[6].groups == 4 and net[6].padding == 'same'
    twice = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))
    convert_to_rpg(twice, x, ring_ratio=0.5, log=False)
    with pytest.raises(ValueError, match="already has an attribute 'rpg'"):
        convert_to_rpg(twice, x, ring_ratio=0.5, log=False)


def test_rpg_backbone_is_registered_in_the_root_registry_and_has_a_plain_config():
    from mmengine.registry import MODELS

    from pddr_mm.deployment.configs import plain_model_cfg
    assert MODELS.get('RPGBackbone') is RPGBackbone
    cfg = dict(type='RetinaNet', backbone=dict(type='RPGBackbone', backbone=dict(RESNET), ring_ratio=0.5))
    assert plain_model_cfg(cfg)['backbone'] == RESNET
