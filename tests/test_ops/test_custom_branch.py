"""A branch type from the user's own module, named in a config: it builds, trains, fuses exactly."""
import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS

from pddr_mm import switch_to_deploy
from pddr_mm.ops import BRANCHES, filter_branches
from random_bn import max_rel_error, randomize_bn

CONFIG = """
custom_imports = dict(imports=['custom_branch_example'], allow_failed_imports=False)
layer = dict(type='PDConv2d', in_channels=8, out_channels=8, kernel_size=3, padding=1, groups=2, mode='{mode}',
             branch_groups=4, branches=('standard', 'group', dict(type='avg_example'), 'identity'))
"""


@pytest.mark.parametrize('mode', ['A', 'B'])
def test_user_branch_type_from_a_config_trains_and_fuses(tmp_path, mode):
    path = tmp_path / 'cfg.py'
    path.write_text(CONFIG.format(mode=mode))
    cfg = Config.fromfile(str(path))  # runs custom_imports: registers 'avg_example'
    assert 'avg_example' in BRANCHES.module_dict
    torch.manual_seed(0)
    model = torch.nn.Sequential(MODELS.build(cfg.layer), torch.nn.ReLU(), MODELS.build(cfg.layer))
    model.train()
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    x, target = torch.randn(4, 8, 9, 9), torch.randn(4, 8, 9, 9)
    losses = []
    for _ in range(5):
        loss = (model(x) - target).square().mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert type(model[0].branches[2]).__name__ == 'AvgPoolBranch'

    randomize_bn(model)
    model.eval()
    for m in model:
        if hasattr(m, 'forward_path'):
            m.forward_path = 'branches'
    fused = copy.deepcopy(model)
    assert switch_to_deploy(fused) == 2
    with torch.no_grad():
        assert max_rel_error(fused(x), model(x)) <= 1e-5


def test_filter_branches_names_what_a_layer_cannot_take():
    import custom_branch_example  # noqa: F401
    kept, dropped = filter_branches(('standard', 'avg_example', 'skeleton', 'group'), 8, 16, 3, padding=1,
                                    branch_groups=4)
    assert kept == ('standard', 'skeleton', 'group')
    assert dropped[0][0] == 'avg_example' and 'in_channels == out_channels' in dropped[0][1]
    kept, dropped = filter_branches(('standard', 'skeleton', 'group', 'pointwise'), 8, 8, 1, groups=8)
    assert kept == ('standard', ) and [d for d, _ in dropped] == ['skeleton', 'group', 'pointwise']
