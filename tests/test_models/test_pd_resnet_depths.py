"""PDResNet at every depth mmdet's ResNet offers: the right PDDR layers, and fused equal to unfused."""
import pytest
import torch
from mmengine.registry import MODELS

import pddr_mm
from pddr_mm.ops import PDConv2d
from random_bn import max_rel_error, randomize_bn

# (depth, PDConv2d layers): BasicBlock nets convert both 3x3 convs of a block, Bottleneck nets conv2
LAYERS = {18: 16, 34: 32, 50: 16, 101: 33, 152: 50}


@pytest.mark.parametrize('depth,mode', [(34, 'A'), (34, 'B'), (101, 'A'), (101, 'B'), (152, 'A'), (152, 'B')])
@torch.no_grad()
def test_every_depth_builds_and_fuses_exactly(depth, mode):
    torch.manual_seed(depth)
    model = MODELS.build(dict(type='PDResNet', depth=depth, mode=mode, base_channels=16, branch_groups=8,
                              norm_eval=False))
    layers = [m for m in model.modules() if isinstance(m, PDConv2d)]
    assert len(layers) == LAYERS[depth] and all(m.mode == mode for m in layers)
    randomize_bn(model, seed=depth)
    model.eval()
    for m in layers:
        m.forward_path = 'branches'
    x = torch.randn(2, 3, 64, 64)
    expected = model(x)
    assert pddr_mm.switch_to_deploy(model) == LAYERS[depth]
    actual = model(x)
    assert len(actual) == len(expected) == 4
    for a, e in zip(actual, expected):
        assert max_rel_error(a, e) <= 1e-5
