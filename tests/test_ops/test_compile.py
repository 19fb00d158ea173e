"""torch.compile on PD-B layers: a temperature that changes every iteration and two batch sizes cost a
bounded number of compiled frames (the temperature is a buffer, not a Python float that Dynamo guards on
where it specializes floats, as torch < 2.6 does by default),
and the compiled model computes what the eager one does. Dynamo is what recompiles, so its 'eager' backend
counts the same frames as inductor without compiling kernels (fast on CI)."""
import copy

import torch
from torch._dynamo.utils import counters

from pddr_mm.ops import PDConv2d
from random_bn import max_rel_error

MAX_FRAMES = 4  # first compile, the batch size turning dynamic, the switch to eval; measured 3


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(PDConv2d(8, 8, 3, padding=1, mode='B', branch_groups=4, reduction=2), torch.nn.ReLU(),
                               PDConv2d(8, 8, 3, padding=1, mode='B', branch_groups=4, reduction=2))


def _set_temperature(net: torch.nn.Module, value: float) -> None:
    for m in net.modules():
        if isinstance(m, PDConv2d):
            m.refine.temperature = value


@torch._dynamo.config.patch(specialize_float=True)  # as torch < 2.6 (and users who set it) guard on floats
def test_changing_temperature_and_batch_do_not_recompile():
    torch._dynamo.reset()
    counters.clear()
    eager = _net()
    net = copy.deepcopy(eager)
    compiled = torch.compile(net, backend='eager')
    opts = [torch.optim.SGD(m.parameters(), lr=0.01) for m in (net, eager)]
    gen = torch.Generator().manual_seed(1)
    for it in range(6):  # training: BN in training mode, branch by branch, annealed temperature
        x = torch.randn(3 if it % 2 else 2, 8, 6, 6, generator=gen)
        for model, fn, opt in ((net, compiled, opts[0]), (eager, eager, opts[1])):
            _set_temperature(model, 30.0 - 5 * it)
            opt.zero_grad()
            out = fn(x)
            out.square().mean().backward()
            opt.step()
        assert max_rel_error(compiled(x), eager(x)) < 1e-5
    net.eval(), eager.eval()
    for it in range(4):  # frozen BN: the fused kernels, per-sample convolution of a changing batch
        x = torch.randn(3 if it % 2 else 2, 8, 6, 6, generator=gen)
        assert max_rel_error(compiled(x), eager(x)) < 1e-5
    assert 0 < counters['frames']['total'] <= MAX_FRAMES, dict(counters['frames'])
