"""The C++ form of combine_parts: built, used on CPU, and a clean fallback when it cannot be built."""
import warnings

import pytest
import torch

from pddr_mm.ops import combine_parts, cpu_ext as cpu_ext_module
from pddr_mm.ops import fusion
from pddr_mm.testing import max_rel_error


def _parts(dtype=torch.float32, requires_grad=False):
    torch.manual_seed(0)
    shapes = [((8, 8, 3, 3), 1), ((8, 2, 3, 3), 4), ((8, 8, 3, 1), 1), ((8, 8, 1, 3), 1)]
    kernels = [torch.randn(s, dtype=dtype, requires_grad=requires_grad) for s, _ in shapes]
    return kernels, [g for _, g in shapes]


def test_combine_parts_runs_the_cpp_op_on_cpu(combine_form, ext_calls):
    calls = ext_calls('combine_forward', 'combine_backward') if combine_form == 'cpp' else []
    kernels, groups = _parts(requires_grad=True)
    coefs = [torch.randn(2, 8, requires_grad=True) for _ in kernels]
    combine_parts(kernels, coefs, groups, 8, (3, 3)).sum().backward()
    assert calls == (['combine_forward', 'combine_backward'] if combine_form == 'cpp' else [])


def test_kernels_and_part_gradients_reuse_freed_memory():
    """Every training step makes the same kernel-sized tensors: the op's come back from its block pool."""
    ext = fusion.cpu_ext()
    if ext is None:
        pytest.skip('the C++ combine op is not built')
    ext.release_cached()
    kernels, groups = _parts(requires_grad=True)
    coefs = torch.randn(len(kernels), 1, 8, requires_grad=True)
    part_bytes = sum(k.numel() * k.element_size() for k in kernels)
    kernel_bytes = 8 * 8 * 9 * 4

    out = combine_parts(kernels, coefs, groups, 8, (3, 3))
    grads = torch.autograd.grad(out.sum(), kernels)
    assert [g.shape for g in grads] == [k.shape for k in kernels]
    assert ext.cached_bytes() == 0
    del out, grads  # the kernel and the part gradients go back to the pool, not to the OS
    assert ext.cached_bytes() == kernel_bytes + part_bytes
    out = combine_parts(kernels, coefs, groups, 8, (3, 3))
    assert ext.cached_bytes() == part_bytes
    grads = torch.autograd.grad(out.sum(), kernels)
    assert ext.cached_bytes() == 0
    expected = torch.autograd.grad(combine_parts(kernels, coefs, groups, 8, (3, 3)).sum(), kernels)
    for g, e in zip(grads, expected):
        assert torch.equal(g, e)
    del out, grads, expected
    ext.release_cached()
    assert ext.cached_bytes() == 0


def test_cpp_and_torch_forms_agree_on_a_5x5_window(monkeypatch):
    """Window rows of 5 take the general run loop of the C++ op (3 and 1 have their own)."""
    torch.manual_seed(0)
    kernels = [torch.randn(6, 4, 5, 5, dtype=torch.float64), torch.randn(6, 4, 5, 1, dtype=torch.float64),
               torch.randn(6, 4, 1, 5, dtype=torch.float64), torch.randn(6, 4, 3, 3, dtype=torch.float64),
               torch.randn(6, 2, 5, 5, dtype=torch.float64)]
    groups = [1, 1, 1, 1, 2]
    coefs = [torch.randn(3, 6, dtype=torch.float64, requires_grad=True) for _ in kernels]
    kernels = [k.requires_grad_() for k in kernels]

    def run():
        out = combine_parts(kernels, coefs, groups, 4, (5, 5))
        signs = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
        grads = torch.autograd.grad((out * signs).sum(), kernels + coefs)
        return [out.detach()] + list(grads)

    cpp = run()
    monkeypatch.setattr(fusion, 'cpu_ext', lambda: None)
    for a, b in zip(cpp, run()):
        assert max_rel_error(a, b) <= 1e-12


@pytest.mark.parametrize('num_dense', [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize('numbers', [False, True])
def test_cpp_and_torch_forms_agree_for_any_number_of_dense_parts(num_dense, numbers, monkeypatch):
    """The op sums the ungrouped full-window parts in one pass, written out for up to three of them;
    then the grouped and smaller parts. A number as a coefficient stands for all of a part's channels."""
    if fusion.cpu_ext() is None:
        pytest.skip('the C++ combine op is not built')
    torch.manual_seed(num_dense)
    kernels = [torch.randn(8, 6, 3, 3, dtype=torch.float64) for _ in range(num_dense)]
    kernels += [torch.randn(8, 3, 3, 3, dtype=torch.float64), torch.randn(8, 6, 1, 3, dtype=torch.float64)]
    groups = [1] * num_dense + [2, 1]
    coefs = [0.5 - 0.25 * i for i in range(len(kernels))] if numbers else \
        [torch.randn(2, 8, dtype=torch.float64) for _ in kernels]
    cpp = combine_parts(kernels, coefs, groups, 6, (3, 3))
    monkeypatch.setattr(fusion, 'cpu_ext', lambda: None)
    assert max_rel_error(cpp, combine_parts(kernels, coefs, groups, 6, (3, 3))) <= 1e-12


def test_cpp_op_rejects_mismatched_inputs():
    ext = fusion.cpu_ext()
    if ext is None:
        pytest.skip('the C++ combine op is not built')
    kernels, groups = _parts()
    coefs = [torch.randn(1, 8) for _ in kernels]
    with pytest.raises(RuntimeError, match='in_channels / groups'):
        ext.combine_forward(torch.empty(1, 8, 6, 3, 3), kernels, coefs, groups)
    with pytest.raises(RuntimeError, match='coefficients'):
        ext.combine_forward(torch.empty(1, 8, 8, 3, 3), kernels, coefs[:1] * 3 + [torch.randn(2, 8)], groups)
    with pytest.raises(RuntimeError, match='centred'):
        ext.combine_forward(torch.empty(1, 8, 8, 3, 3), [torch.randn(8, 8, 2, 3)], coefs[:1], [1])


def test_unbuildable_op_falls_back_with_one_warning(monkeypatch):
    import torch.utils.cpp_extension as cpp_extension

    def broken(*args, **kwargs):
        raise OSError('no compiler')

    monkeypatch.setattr(cpp_extension, 'load', broken)
    monkeypatch.setattr(cpu_ext_module, '_state', {'tried': False, 'module': None})
    with pytest.warns(UserWarning, match='no compiler'):
        assert cpu_ext_module.cpu_ext() is None
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert cpu_ext_module.cpu_ext() is None  # tried once, not again on every layer
    kernels, groups = _parts()
    assert combine_parts(kernels, [0.5] * 4, groups, 8, (3, 3)).shape == (1, 8, 8, 3, 3)


def test_switch_turns_the_op_off(monkeypatch):
    monkeypatch.setenv('PDDR_CPU_EXT', '0')
    monkeypatch.setattr(cpu_ext_module, '_state', {'tried': False, 'module': None})
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert cpu_ext_module.cpu_ext() is None


@pytest.mark.parametrize('mode', ['A', 'B'])
def test_traced_model_does_not_bake_in_the_cpp_op(mode):
    """torch.jit.trace cannot see inside the C++ op: a layer traced on one input must still give the right
    output on another, before and after deployment (the torch-op form is used while tracing)."""
    from pddr_mm import switch_to_deploy
    from test_fusion_exact import make_layer
    layer = make_layer(mode, reduction=2)
    layer.forward_path = 'auto'  # eval mode: the kernels are built by combine_parts on every call
    x, other = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6) * 3
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the tracer's warnings about Python values in the graph
        traced_fused_path = torch.jit.trace(layer, x)
        assert max_rel_error(traced_fused_path(other), layer(other)) <= 1e-5
        switch_to_deploy(layer)
        traced = torch.jit.trace(layer, x)
        assert max_rel_error(traced(other), layer(other)) <= 1e-5


@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-13), (torch.float32, 1e-6)])
@pytest.mark.parametrize('batch', [1, 3])
def test_refinement_runs_as_one_cpp_call_in_cpu_inference(dtype, tol, batch, ext_calls):
    """Without autograd on CPU, Refinement.forward is the C++ op, with the torch ops' weights; with autograd
    it stays the differentiable torch form."""
    from pddr_mm.ops.refine import Refinement
    torch.manual_seed(0)
    refine = Refinement(48, 4, reduction=8).to(dtype)
    x = torch.randn(batch, 48, 7, 5, dtype=dtype) * 3 + 1
    calls = ext_calls('refine_weights')
    with torch.no_grad():
        cpp = refine(x)
    assert calls == ['refine_weights']
    torch_form = refine(x)  # autograd on: the torch ops
    assert calls == ['refine_weights'] and torch_form.requires_grad
    assert cpp.dtype == dtype and cpp.shape == (batch, 4)
    assert max_rel_error(cpp, torch_form.detach()) <= tol
    with torch.no_grad():  # a channels_last input is not contiguous: the torch ops take it
        strided = refine(x.to(memory_format=torch.channels_last))
    assert calls == ['refine_weights'] and max_rel_error(strided, torch_form.detach()) <= tol


def test_cpp_refinement_rejects_mismatched_inputs():
    ext = fusion.cpu_ext()
    if ext is None:
        pytest.skip('the C++ combine op is not built')
    x, w1, b1, w2, b2 = torch.randn(1, 8, 3, 3), torch.randn(2, 8), torch.randn(2), torch.randn(4, 2), torch.randn(4)
    with pytest.raises(RuntimeError, match='fc1'):
        ext.refine_weights(x, torch.randn(2, 6), b1, w2, b2)
    with pytest.raises(RuntimeError, match='fc2'):
        ext.refine_weights(x, w1, b1, torch.randn(4, 3), b2)
    with pytest.raises(RuntimeError, match="dtype"):
        ext.refine_weights(x, w1.double(), b1, w2, b2)
    with pytest.raises(RuntimeError, match='contiguous'):
        ext.refine_weights(x.to(memory_format=torch.channels_last), w1, b1, w2, b2)
