"""Fused and unfused PDConv2d agree to float precision: every branch subset, mode, shape and batch."""
import copy
import itertools

import pytest
import torch

from pddr_mm import PDConv2d, switch_to_deploy
from pddr_mm.testing import max_rel_error, randomize_bn

# the rows of the seed's ablation table (ResNet-18), plus a skeleton-only layer
ABLATION = [
    ('standard', ),
    ('standard', 'standard'),
    ('standard', 'group'),
    ('standard', 'skeleton'),
    ('standard', 'group', 'skeleton'),
    ('standard', 'standard', 'group', 'skeleton'),
    ('skeleton', ),
]
# PD-B needs two branches to weight (a single one is refused at construction, see test_pd_conv)
SUBSETS_AND_MODES = [(b, m) for b in ABLATION for m in ('A', 'B') if m == 'A' or len(b) > 1]
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def make_layer(mode, branches=('standard', 'standard', 'group', 'skeleton'), cin=8, cout=12, k=3, stride=1,
               padding=None, dilation=1, dtype=torch.float32, seed=0, **kwargs):
    torch.manual_seed(seed)
    padding = dilation * (k // 2) if padding is None else padding
    layer = PDConv2d(cin, cout, k, stride=stride, padding=padding, dilation=dilation, mode=mode,
                     branches=branches, branch_groups=4, forward_path='branches', **kwargs)
    layer.init_weights()
    randomize_bn(layer, seed)
    if mode == 'B':  # a refinement module far from uniform weights, so mixing errors show
        with torch.no_grad():
            layer.refine.fc1.weight.normal_(0, 2.0)
            layer.refine.fc1.bias.uniform_(0.1, 0.5)  # no dead ReLU: every parameter gets a gradient
            layer.refine.fc2.weight.normal_(0, 2.0)
            layer.refine.fc2.bias.normal_(0, 1.0)
    return layer.to(dtype).eval()


def check_fused(layer, x):
    with torch.no_grad():
        expected = layer(x)
        fused = copy.deepcopy(layer)
        assert switch_to_deploy(fused) == 1
        actual = fused(x)
    assert actual.shape == expected.shape
    err = max_rel_error(actual, expected)
    assert err <= TOL[x.dtype], err
    return fused


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('branches,mode', SUBSETS_AND_MODES)
def test_every_branch_subset(branches, mode, dtype, combine_form):
    layer = make_layer(mode, branches, dtype=dtype)
    check_fused(layer, torch.randn(3, 8, 11, 14, dtype=dtype))


@pytest.mark.parametrize('mode', ['A', 'B'])
@pytest.mark.parametrize('batch,stride,k', list(itertools.product([1, 2, 3, 64], [1, 2], [3, 5])))
def test_batch_stride_kernel(mode, batch, stride, k):
    layer = make_layer(mode, k=k, stride=stride)
    check_fused(layer, torch.randn(batch, 8, 13, 10))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('mode', ['A', 'B'])
@pytest.mark.parametrize('k,stride,dilation,padding', [
    (3, 1, 2, None),
    (5, 2, 2, None),
    (3, 1, 1, 0),  # less padding than 'same': the skeleton branch crops its input
    (5, 1, 2, 1),
    (3, 2, 1, 3),  # more padding than 'same'
    (3, 1, 1, (0, 2)),
])
def test_dilation_and_padding(mode, k, stride, dilation, padding, dtype):
    layer = make_layer(mode, k=k, stride=stride, dilation=dilation, padding=padding, dtype=dtype)
    check_fused(layer, torch.randn(2, 8, 15, 12, dtype=dtype))


@pytest.mark.parametrize('mode', ['A', 'B'])
def test_batch_equal_to_channel_count(mode):
    layer = make_layer(mode, cin=8, cout=8)
    check_fused(layer, torch.randn(8, 8, 9, 9))


@pytest.mark.parametrize('mode', ['A', 'B'])
def test_pd_b_samples_are_independent(mode):
    """Each sample's output depends on that sample alone, as in the unfused network."""
    fused = check_fused(make_layer(mode), torch.randn(4, 8, 9, 9))
    x = torch.randn(4, 8, 9, 9)
    with torch.no_grad():
        together = fused(x)
        alone = torch.cat([fused(x[i:i + 1]) for i in range(4)])
    assert max_rel_error(together, alone) <= 1e-5


@pytest.mark.parametrize('mode', ['A', 'B'])
def test_bias_is_folded(mode):
    layer = make_layer(mode, bias=True)
    with torch.no_grad():
        layer.bias.normal_()
    check_fused(layer, torch.randn(2, 8, 9, 9))


@pytest.mark.parametrize('mode', ['A', 'B'])
def test_online_fused_path_matches_branches_in_eval(mode):
    layer = make_layer(mode)
    x = torch.randn(3, 8, 10, 9)
    with torch.no_grad():
        expected = layer(x)
        layer.forward_path = 'auto'
        actual = layer(x)
    assert max_rel_error(actual, expected) <= 1e-5


@pytest.mark.parametrize('groups,size,lead', [(1, (3, 3), ()), (4, (3, 3), ()), (1, (3, 1), ()), (1, (1, 5), ()),
                                              (2, (3, 1), (3, )), (4, (5, 5), (2, ))])
def test_add_kernel_matches_padding_a_dense_kernel(groups, size, lead):
    """add_kernel_ equals the textbook construction: block-diagonal dense kernel, zero-padded."""
    from pddr_mm.ops import add_kernel_
    out_c, in_c, full = 8, 12, (5, 5)
    kernel = torch.randn(lead + (out_c, in_c // groups) + size, dtype=torch.float64)
    dense = torch.randn(lead + (out_c, in_c) + full, dtype=torch.float64)
    expected = dense.clone()
    top, left = (full[0] - size[0]) // 2, (full[1] - size[1]) // 2
    for g in range(groups):
        o = slice(g * out_c // groups, (g + 1) * out_c // groups)
        i = slice(g * in_c // groups, (g + 1) * in_c // groups)
        expected[..., o, i, top:top + size[0], left:left + size[1]] += kernel[..., o, :, :, :]
    assert torch.equal(add_kernel_(dense, kernel, groups), expected)


@pytest.mark.parametrize('grad', [False, True])
def test_per_sample_conv_is_one_conv_per_sample(grad):
    """The batch-folded grouped convolution convolves each sample with its own kernel only."""
    from pddr_mm.ops import per_sample_conv2d
    torch.manual_seed(0)
    x, k, b = torch.randn(5, 6, 9, 8), torch.randn(5, 4, 6, 3, 3), torch.randn(5, 4)
    with torch.set_grad_enabled(grad):
        out = per_sample_conv2d(x, k, b, (2, 1), (1, 2), (1, 2))
    expected = torch.cat([torch.nn.functional.conv2d(x[i:i + 1], k[i], b[i], (2, 1), (1, 2), (1, 2)) for i in range(5)])
    assert max_rel_error(out.detach(), expected) <= 1e-5


def _scaled_parts(dtype=torch.float64):
    torch.manual_seed(0)
    out_c, in_c = 4, 6
    shapes = [((out_c, in_c, 3, 3), 1), ((out_c, in_c, 3, 3), 1), ((out_c, in_c // 2, 3, 3), 2),
              ((out_c, in_c, 3, 1), 1), ((out_c, in_c, 1, 3), 1)]
    return [(torch.randn(s, dtype=dtype, requires_grad=True), torch.randn(out_c, dtype=dtype, requires_grad=True), g)
            for s, g in shapes]


def test_merge_parts_equals_fold_then_add_and_its_backward_is_exact(combine_form):
    """merge_parts applies the BN scales while summing; value and hand-written backward are checked against
    folding each part and adding it (forward) and against finite differences (gradcheck, float64)."""
    from pddr_mm.ops import add_kernel_, merge_parts
    parts = _scaled_parts()
    expected = torch.zeros(4, 6, 3, 3, dtype=torch.float64)
    for k, s, g in parts:
        add_kernel_(expected, k.detach() * s.detach().reshape(-1, 1, 1, 1), g)
    assert max_rel_error(merge_parts(parts, 6, (3, 3)).detach(), expected) <= 1e-12

    groups = [g for _, _, g in parts]

    def merged(*tensors):
        n = len(groups)
        return merge_parts(list(zip(tensors[:n], tensors[n:], groups)), 6, (3, 3))

    assert torch.autograd.gradcheck(merged, [k for k, _, _ in parts] + [s for _, s, _ in parts])


def test_combine_parts_per_sample_equals_textbook_mix_and_its_backward_is_exact(combine_form):
    """combine_parts (PD-B: one kernel per sample) against building each sample's kernel part by part,
    and its hand-written backward against finite differences (gradcheck, float64, N = 3)."""
    from pddr_mm.ops import add_kernel_, combine_parts
    parts = _scaled_parts()
    groups = [g for _, _, g in parts]
    kernels = [k for k, _, _ in parts]
    coefs = [torch.randn(3, 4, dtype=torch.float64, requires_grad=True) for _ in parts]
    expected = torch.zeros(3, 4, 6, 3, 3, dtype=torch.float64)
    for n in range(3):
        for k, c, g in zip(kernels, coefs, groups):
            add_kernel_(expected[n], k.detach() * c[n].detach().reshape(-1, 1, 1, 1), g)
    assert max_rel_error(combine_parts(kernels, coefs, groups, 6, (3, 3)).detach(), expected) <= 1e-12

    def combined(*tensors):
        return combine_parts(tensors[:len(groups)], tensors[len(groups):], groups, 6, (3, 3))

    assert torch.autograd.gradcheck(combined, kernels + coefs)


def test_combine_parts_into_a_buffer_with_number_coefficients(combine_form):
    """Without autograd a kernel can be written into a reused buffer with numbers as coefficients (N = 1);
    that must equal the tensor-coefficient form, and asking for out= under autograd must fail loudly."""
    from pddr_mm.ops import combine_parts
    parts = _scaled_parts()
    groups = [g for _, _, g in parts]
    kernels = [k.detach() for k, _, _ in parts]
    numbers = [0.5, -1.25, 2.0, 0.75, -0.1]
    expected = combine_parts(kernels, [torch.full((1, 4), c, dtype=torch.float64) for c in numbers], groups, 6,
                             (3, 3))
    buf = torch.full((1, 4, 6, 3, 3), float('nan'), dtype=torch.float64)  # stale contents must not leak
    out = combine_parts(kernels, numbers, groups, 6, (3, 3), out=buf)
    assert out.data_ptr() == buf.data_ptr()
    assert max_rel_error(out, expected) <= 1e-12
    with pytest.raises(ValueError, match='out='):
        combine_parts([k for k, _, _ in parts], numbers, groups, 6, (3, 3), out=buf)


def test_both_forms_of_the_batch_reduction_agree():
    """The combine backward reduces over the batch sample by sample on CPU and in one op on CUDA; CI has
    no GPU, so the CUDA form is checked here on CPU tensors."""
    from pddr_mm.ops.fusion import _batch_weighted_sum, _coef_view, _part_view
    torch.manual_seed(0)
    # a grouped part's strided view of per-sample kernel gradients, as in the backward
    view = _part_view(torch.randn(5, 4, 6, 3, 3, dtype=torch.float64), (4, 3, 3, 3), 2)
    coef = _coef_view(torch.randn(5, 4, dtype=torch.float64), 2)
    expected = sum(view[n] * coef[n] for n in range(5))
    for by_sample in (True, False):
        assert max_rel_error(_batch_weighted_sum(view, coef, by_sample), expected) <= 1e-12


def test_kernel_workspace_is_reused_and_per_thread():
    import threading

    from pddr_mm.ops.fusion import kernel_workspace
    like = torch.zeros(1)
    a = kernel_workspace((4, 5), like)
    b = kernel_workspace((2, 3), like)
    assert b.data_ptr() == a.data_ptr(), 'a smaller request reuses the buffer'
    assert kernel_workspace((2, 3), like, slot='other').data_ptr() != a.data_ptr()
    other = []
    t = threading.Thread(target=lambda: other.append(kernel_workspace((4, 5), like).data_ptr()))
    t.start()
    t.join()
    assert other[0] != a.data_ptr(), 'each thread has its own buffers'


@pytest.mark.parametrize('own_bias', [False, True])
@pytest.mark.parametrize('batch,per_pass', [(1, 1), (3, 3), (5, 2), (5, 1)])
def test_deployed_pd_b_cpu_inference_loop_equals_grouped_form(batch, per_pass, own_bias, combine_form, monkeypatch,
                                                                 ext_calls):
    """CPU inference mixes a few samples' kernels at a time into a reused buffer (``per_pass`` of them, set
    through the buffer size) and convolves each sample with its own, in one C++ call per layer or as a
    loop of torch ops; the grouped form (used with autograd and on CUDA) must give the same outputs, for
    every sample of the batch, with and without the layer's own bias."""
    from pddr_mm.ops import fusion, pd_conv
    layer = make_layer('B', stride=2, bias=own_bias)
    if own_bias:
        with torch.no_grad():
            layer.bias.normal_()
    switch_to_deploy(layer)
    monkeypatch.setattr(pd_conv, 'MIX_BUFFER_BYTES', per_pass * 12 * 8 * 3 * 3 * 4)  # per_pass kernels (out, in, 3, 3)
    calls = []
    if combine_form == 'torch':  # one combine per pass
        real = fusion._combine
        monkeypatch.setattr(fusion, '_combine', lambda *a, **kw: calls.append(1) or real(*a, **kw))
    else:  # one C++ call for the layer
        calls = ext_calls('mixed_conv')
    x = torch.randn(batch, 8, 11, 10)
    with torch.no_grad():
        loop = layer(x)
    assert len(calls) == (-(-batch // per_pass) if combine_form == 'torch' else 1)
    grouped = layer(x).detach()  # grad enabled: the grouped per-sample convolution
    assert max_rel_error(loop, grouped) <= 1e-6


def test_hooks_on_the_refinement_see_the_deployed_cpu_forward(combine_form):
    """Tools read PD-B's branch weights with forward hooks on ``refine`` (tools/analysis_tools/plot_curves.py):
    the deployed CPU forward must run the module, not a copy of its ops."""
    layer = make_layer('B')
    switch_to_deploy(layer)
    seen = []
    layer.refine.register_forward_hook(lambda module, inputs, out: seen.append(out))
    x = torch.randn(3, 8, 9, 9)
    with torch.no_grad():
        layer(x)
    assert len(seen) == 1 and seen[0].shape == (3, 4)
    assert torch.allclose(seen[0].sum(1), torch.ones(3))


def test_sample_kernels_are_the_kernels_the_deployed_forward_convolves_with(combine_form):
    """``sample_kernels`` (what tools/benchmark.py times as the mixing) gives, for the refinement's weights,
    the kernels that reproduce the deployed layer's output sample by sample."""
    import torch.nn.functional as F
    layer = make_layer('B', dtype=torch.float64)
    switch_to_deploy(layer)
    x = torch.randn(3, 8, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        weights = layer.refine(x)
        kernels = layer.sample_kernels(weights)
        buf = torch.empty_like(kernels)
        assert layer.sample_kernels(weights, out=buf) is buf and torch.equal(buf, kernels)
        bias = weights @ layer.fused_bias
        by_hand = torch.cat([F.conv2d(x[i:i + 1], kernels[i], bias[i], padding=1) for i in range(3)])
        assert max_rel_error(by_hand, layer(x)) <= 1e-12
    with pytest.raises(ValueError, match=r'weights must be \(N, 4\)'):
        layer.sample_kernels(weights[:, :3])
    with pytest.raises(RuntimeError, match='deployed PD-B'):
        make_layer('B').sample_kernels(weights.float())
    pd_a = make_layer('A')
    switch_to_deploy(pd_a)
    with pytest.raises(RuntimeError, match='deployed PD-B'):
        pd_a.sample_kernels(weights.float())


def test_deployed_pd_b_model_converts_to_channels_last(combine_form):
    """``model.to(memory_format=torch.channels_last)`` converts every 4-D parameter and fails on 5-D ones: a
    deployed PD-B layer stores its kernels 4-D, so it converts and gives the same outputs."""
    layer = make_layer('B')
    switch_to_deploy(layer)
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        expected = layer(x)
        layer.to(memory_format=torch.channels_last)
        assert layer.fused_weight.is_contiguous(memory_format=torch.channels_last)
        assert max_rel_error(layer(x.to(memory_format=torch.channels_last)), expected) <= 1e-6
        assert max_rel_error(layer(x), expected) <= 1e-6


def test_deploy_checkpoint_with_5d_stored_kernels_still_loads():
    """Deploy checkpoints written before the kernels were stored 4-D hold them as (B, out, in, kh, kw)."""
    layer = make_layer('B')
    switch_to_deploy(layer)
    state = layer.state_dict()
    state['fused_weight'] = state['fused_weight'].unflatten(0, (3, 12))
    fresh = make_layer('B', deploy=True)
    fresh.load_state_dict(state)
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        assert torch.equal(fresh.fused_weight, layer.fused_weight) and torch.equal(fresh(x), layer(x))


def test_pd_b_cpu_inference_in_channels_last(combine_form):
    """A model converted to channels_last has strided branch kernels and inputs: the frozen-BN CPU inference
    (kernels folded on the fly) gives the same outputs as with contiguous ones."""
    layer = make_layer('B')
    layer.forward_path = 'fused'
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        expected = layer(x)
        layer.to(memory_format=torch.channels_last)
        assert not layer.branches[0].conv.weight.is_contiguous()
        actual = layer(x.contiguous(memory_format=torch.channels_last))
    assert max_rel_error(actual, expected) <= 1e-6


def textbook_scale_shift(bn):
    """scale = g / sqrt(var + eps), shift = b - mean * scale, written out per BN (the reference)."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std if bn.affine else 1.0 / std
    return scale, (bn.bias if bn.affine else 0.0) - bn.running_mean * scale


def test_stacked_bn_scales_equal_one_by_one():
    """bn_scales_shifts (all of a layer's BNs in a few ops) and bn_scale_shift (one BN) against the textbook
    fold of each BN and the BN module itself: values and gradients, with different eps and a BN without
    affine parameters."""
    from pddr_mm.ops import bn_scale_shift
    from pddr_mm.ops.fusion import bn_scales_shifts
    torch.manual_seed(0)
    bns = [torch.nn.BatchNorm2d(5, eps=1e-5), torch.nn.BatchNorm2d(5, eps=1e-3), torch.nn.BatchNorm2d(5, affine=False)]
    for bn in bns:
        bn.double().eval()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        if bn.affine:
            with torch.no_grad():
                bn.weight.normal_()
                bn.bias.normal_()
    scales, shifts = bn_scales_shifts(bns, torch.float64)
    one_by_one = [textbook_scale_shift(bn) for bn in bns]
    assert max_rel_error(scales, torch.stack([s for s, _ in one_by_one])) <= 1e-14
    assert max_rel_error(shifts, torch.stack([b for _, b in one_by_one])) <= 1e-14
    x = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    for bn, scale, shift in zip(bns, scales, shifts):
        single_scale, single_shift = bn_scale_shift(bn, torch.float64)
        assert torch.equal(single_scale, scale) and torch.equal(single_shift, shift)
        with torch.no_grad():
            assert max_rel_error(x * scale.reshape(-1, 1, 1) + shift.reshape(-1, 1, 1), bn(x)) <= 1e-13
    weights = torch.randn(2, 3, 5, dtype=torch.float64)
    grads = torch.autograd.grad((scales * weights[0] + shifts * weights[1]).sum(), [bns[0].weight, bns[1].bias])
    expected = torch.autograd.grad(sum((s * w0 + b * w1).sum() for (s, b), w0, w1 in zip(one_by_one, *weights)),
                                   [bns[0].weight, bns[1].bias])
    for g, e in zip(grads, expected):
        assert max_rel_error(g, e) <= 1e-14
    bns[1].train()
    with pytest.raises(RuntimeError, match='training mode'):
        bn_scales_shifts(bns, torch.float64)


def test_combine_parts_rejects_mismatched_arguments():
    from pddr_mm.ops import combine_parts
    kernel = torch.randn(4, 6, 3, 3, requires_grad=True)
    with pytest.raises(ValueError, match='one coefficient and one groups entry per part'):
        combine_parts([kernel], [torch.ones(1, 4), torch.ones(1, 4)], [1], 6, (3, 3))
    with pytest.raises(ValueError, match='must be a tensor'):
        combine_parts([kernel, kernel], [torch.ones(1, 4), 0.5], [1, 1], 6, (3, 3))
