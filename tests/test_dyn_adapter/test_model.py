"""DynAdapterClassifier on a tiny ViT: what trains, dynamic exit, and the FLOPs it reports."""
import copy

import pytest
import torch
from _tiny import NUM_CLASSES, build, images, vit_cfg
from mmengine.optim import build_optim_wrapper
from mmpretrain.structures import DataSample

ADAPTERS = [dict(type='Adapter', hidden_dim=4), dict(type='LoRA', rank=2, alpha=2)]
IDS = ['adapter', 'lora']


def samples(n: int):
    return [DataSample().set_gt_label(i % NUM_CLASSES) for i in range(n)]


@pytest.mark.parametrize('adapter', ADAPTERS, ids=IDS)
def test_only_adapters_and_heads_are_trainable(adapter):
    model = build(adapter=adapter)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(('adapters.', 'heads.')) for n in trainable), trainable
    assert not any(p.requires_grad for p in model.backbone.parameters())
    for block in model.adapters:  # one adapter per block, each with parameters of its own
        assert any(p.requires_grad for p in block.parameters())
    assert len(model.adapters) == len(model.backbone.layers)
    assert model.backbone.layers[0].attn.qkv.weight.shape == (96, 32)  # mmpretrain's names, unwrapped


@pytest.mark.parametrize('adapter', ADAPTERS, ids=IDS)
def test_frozen_backbone_unchanged_by_training_steps(adapter):
    model = build(adapter=adapter, backbone=vit_cfg(drop_rate=0.1, drop_path_rate=0.1))
    model.train()
    assert model.backbone.training and model.backbone.drop_after_pos.p == 0.1  # its dropouts as configured
    frozen = copy.deepcopy(model.backbone.state_dict())
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    wrapper = build_optim_wrapper(model, dict(optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.1)))
    for step in range(3):
        losses = model(images(4, seed=step), samples(4), mode='loss')
        wrapper.update_params(sum(losses.values()))
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, frozen[name]), name
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trained[n])]
    assert any(n.startswith('adapters.') for n in moved) and any(n.startswith('heads.') for n in moved)


def test_loss_is_the_weighted_sum_of_the_heads_cross_entropies():
    model = build(exit_indices=(0, 2, 3))
    model.loss_weights = [0.25, 0.5, 1.0]
    x, data = images(6), samples(6)
    losses = model(x, data, mode='loss')
    assert sorted(losses) == ['loss_exit0', 'loss_exit1', 'loss_exit2']
    target = torch.tensor([s.gt_label.item() for s in data])
    for k, logits in enumerate(model.exit_logits(x)):
        expected = model.loss_weights[k] * torch.nn.functional.cross_entropy(logits, target)
        torch.testing.assert_close(losses[f'loss_exit{k}'], expected)


def _count_calls(modules):
    counts = [0] * len(modules)
    handles = [m.register_forward_hook(lambda *a, i=i: counts.__setitem__(i, counts[i] + 1))
               for i, m in enumerate(modules)]
    return counts, handles


@pytest.mark.parametrize('adapter', ADAPTERS, ids=IDS)
@torch.no_grad()
def test_threshold_none_is_the_last_head_on_a_plain_forward(adapter):
    model = build(adapter=adapter, exit_threshold=None)
    x = images(5)
    heads, handles = _count_calls(model.heads)
    preds = model(x, mode='predict')
    for h in handles:
        h.remove()
    assert [p.exit_index for p in preds] == [model.num_exits - 1] * 5
    assert heads == [0] * (model.num_exits - 1) + [1]  # no early head is evaluated
    plain = model.heads[-1](model.backbone(x)[0]).softmax(-1)  # mmpretrain's own forward, through every block
    torch.testing.assert_close(torch.stack([p.pred_score for p in preds]), plain, rtol=0, atol=1e-6)
    assert all(p.flops == model.full_flops for p in preds)


@torch.no_grad()
def test_threshold_zero_exits_at_the_first_head_and_runs_no_later_block():
    model = build(exit_indices=(1, 2, 3), exit_threshold=0.)
    blocks, handles = _count_calls(model.backbone.layers)
    heads, handles2 = _count_calls(model.heads)
    preds = model(images(4), mode='predict')
    for h in handles + handles2:
        h.remove()
    assert [p.exit_index for p in preds] == [0] * 4
    assert blocks == [1, 1, 0, 0] and heads == [1, 0, 0]
    assert all(p.flops == model.exit_flops[0] < model.full_flops for p in preds)


@pytest.mark.parametrize('adapter', ADAPTERS, ids=IDS)
@torch.no_grad()
def test_mixed_batch_equals_its_samples_run_alone(adapter):
    model = build(adapter=adapter, exit_indices=(0, 1, 3))
    x = images(8, seed=4)
    first = model.exit_logits(x)[0].softmax(-1).max(-1).values
    middle = first.sort().values[3:5]  # half leave at the first exit; the threshold between two samples'
    model.exit_threshold = float(middle.mean())  # values, as one at the threshold could go either way by an ulp
    sizes = []
    handle = model.backbone.layers[1].register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    scores, exits = model.dynamic_forward(x, model.exit_threshold)
    handle.remove()
    assert 0 < int((exits == 0).sum()) < 8 and (exits > 0).any()
    assert sizes == [int((exits > 0).sum())]  # the samples that left are not in the batch any more
    per_head = [logits.softmax(-1) for logits in model.exit_logits(x)]
    for i in range(8):
        alone_scores, alone_exit = model.dynamic_forward(x[i:i + 1], model.exit_threshold)
        assert alone_exit.item() == exits[i].item()
        torch.testing.assert_close(alone_scores[0], scores[i], rtol=0, atol=1e-6)
        torch.testing.assert_close(scores[i], per_head[exits[i]][i], rtol=0, atol=1e-6)  # the head it left at


@torch.no_grad()
def test_a_deep_copy_uses_its_own_adapters():
    """EMA and TTA deep-copy the model; the copy's blocks must call the copy's adapters."""
    model = build()
    x = images(2)
    before = model.exit_logits(x)[-1]
    clone = copy.deepcopy(model)
    for p in clone.adapters.parameters():
        p.add_(1.)
    assert torch.equal(model.exit_logits(x)[-1], before)
    assert not torch.allclose(clone.exit_logits(x)[-1], before)


def test_exit_every_and_balanced_heads():
    model = build(exit_indices=None, exit_every=3)
    assert model.exit_indices == (2, 3)
    model = build(exit_indices=None, exit_every=1)
    assert model.exit_indices == (0, 1, 2, 3)
    hidden = [sum(isinstance(m, torch.nn.Linear) for m in h.mlp) for h in model.heads]
    assert hidden == [2, 1, 1, 0]  # heavier heads at shallow exits
    assert isinstance(model.heads[-1].norm, torch.nn.Identity)  # the last reads the backbone's final norm
    linear = build(exit_indices=(1, 3), head=dict(num_classes=NUM_CLASSES, balanced=False))
    assert all(len(h.mlp) == 0 for h in linear.heads)


def test_bidirectional_sparsity():
    model = build(sparsity=dict(drop_shallow=0.3, drop_deep=0.0, grad_mask=0.))
    assert [round(a.dropout.p, 6) for a in model.adapters] == [0.3, 0.2, 0.1, 0.]
    assert [a.dropout.p for a in build(sparsity=None).adapters] == [0.] * 4
    from pddr_mm.dyn_adapter.sparsity import BidirectionalSparsity
    rates = BidirectionalSparsity(drop_shallow=0.1, drop_deep=0.).drop_rates(12)  # a ViT-B's depth
    assert rates[0] == 0.1 and rates[-1] == 0. and all(0. <= r <= 0.1 for r in rates)

    def adapter_grads(grad_mask, seed):
        model = build(adapter=dict(type='LoRA', rank=2), sparsity=dict(drop_shallow=0., grad_mask=grad_mask))
        model.train()
        torch.manual_seed(seed)
        sum(model(images(4), samples(4), mode='loss').values()).backward()
        return torch.cat([p.grad.flatten() for p in model.adapters.parameters()])

    full, masked = adapter_grads(0., 0), adapter_grads(0.5, 0)
    live = full != 0
    kept = masked[live] == full[live]
    assert torch.all(kept | (masked[live] == 0))  # each entry is kept as it was or zeroed
    assert 0.35 < 1 - kept.float().mean().item() < 0.65


def test_analytic_flops_match_mmengine_flop_analyzer():
    from mmengine.analysis import FlopAnalyzer
    from mmengine.analysis.jit_handles import get_shape

    model = build(exit_indices=(1, 3))

    def sdpa(inputs, outputs):  # mmengine has no handle for torch's fused attention: q @ k^T and attn @ v
        q, k = get_shape(inputs[0]), get_shape(inputs[1])
        return 2 * q[0] * q[1] * q[2] * k[2] * q[3]

    class ToExit(torch.nn.Module):

        def __init__(self, k):
            super().__init__()
            self.model, self.k = model, k

        def forward(self, x):
            m = self.model
            t, hw = m._embed(x)
            for layer in m.backbone.layers[:m.exit_indices[self.k] + 1]:
                t = layer(t)
            return m.heads[self.k](m._exit_feature(t, self.k, hw))

    for k, expected in ((0, model.exit_flops[0]), (1, model.full_flops)):
        analyzer = FlopAnalyzer(ToExit(k), (images(1), )).set_op_handle('aten::scaled_dot_product_attention', sdpa)
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        counted = analyzer.total() - analyzer.by_operator().get('layer_norm', 0)  # norms are not counted
        assert counted == expected, (k, counted, expected)
    # a sample leaving at the last exit also paid for the first head
    assert model.exit_flops[1] == model.full_flops + model.heads[0].flops()
