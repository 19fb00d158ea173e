"""Checkpoints hold the trained tensors only and restore exactly, the backbone coming from its init_cfg."""
import torch
from _tiny import NUM_CLASSES, images, vit_cfg
from mmengine.runner.checkpoint import get_state_dict, load_checkpoint, save_checkpoint, weights_to_cpu
from mmpretrain.registry import MODELS

import pddr_mm  # noqa: F401


def _pretrained_vit(path) -> dict:
    """A classifier-style checkpoint of a tiny ViT (keys backbone.*), as mmpretrain's model zoo has."""
    torch.manual_seed(7)
    vit = MODELS.build(vit_cfg())
    vit.init_weights()
    state = {f'backbone.{k}': v for k, v in vit.state_dict().items()}
    state['head.layers.head.weight'] = torch.zeros(10, 32)  # an extra key such checkpoints have
    torch.save(dict(state_dict=state), path)
    return vit.state_dict()


def _model(pretrained: str, **kwargs):
    init_cfg = dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')
    return MODELS.build(dict(type='DynAdapterClassifier', backbone=vit_cfg(init_cfg=init_cfg),
                             head=dict(num_classes=NUM_CLASSES), exit_indices=(1, 3), exit_threshold=0.3, **kwargs))


def test_saved_checkpoint_holds_trainable_tensors_and_restores_exactly(tmp_path):
    pretrained = str(tmp_path / 'vit.pth')
    vit_state = _pretrained_vit(pretrained)
    trained = _model(pretrained)
    trained.init_weights()  # as the Runner does before training: loads the backbone
    with torch.no_grad():
        for p in trained.parameters():
            if p.requires_grad:
                p.normal_(std=0.2)  # stands for training
    trained.eval()
    path = str(tmp_path / 'iter_1.pth')
    save_checkpoint(dict(state_dict=weights_to_cpu(get_state_dict(trained))), path)  # what the Runner saves

    saved = torch.load(path, weights_only=False)['state_dict']
    assert set(saved) == {n for n, p in trained.named_parameters() if p.requires_grad}
    assert sum(v.numel() for v in saved.values()) == trained.trainable_parameters()

    restored = _model(pretrained)  # tools/test.py: built, never initialised, then loaded
    load_checkpoint(restored, path, strict=True)  # strict: no backbone key reported missing
    restored.eval()
    for name, value in restored.backbone.state_dict().items():
        assert torch.equal(value, vit_state[name]), name
    for name, value in trained.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value), name
    x = images(6)
    a, b = trained(x, mode='predict'), restored(x, mode='predict')
    assert [p.exit_index for p in a] == [p.exit_index for p in b]
    assert torch.equal(torch.stack([p.pred_score for p in a]), torch.stack([p.pred_score for p in b]))


def test_backbone_is_kept_when_nothing_names_it(tmp_path):
    pretrained = str(tmp_path / 'vit.pth')
    _pretrained_vit(pretrained)
    assert any(k.startswith('backbone.') for k in _model(pretrained, save_frozen=True).state_dict())
    scratch = MODELS.build(dict(type='DynAdapterClassifier', backbone=vit_cfg(), head=dict(num_classes=NUM_CLASSES),
                                exit_every=2))
    assert scratch.save_frozen  # no Pretrained init_cfg: the checkpoint must hold the backbone
    state = scratch.state_dict()
    assert set(state) == set(dict(scratch.named_parameters())) | set(dict(scratch.named_buffers()))


def test_backbone_tensors_made_trainable_are_saved(tmp_path):
    pretrained = str(tmp_path / 'vit.pth')
    _pretrained_vit(pretrained)
    model = _model(pretrained)
    model.backbone.ln1.weight.requires_grad = True  # a user who also tunes the final norm
    state = model.state_dict()
    assert 'backbone.ln1.weight' in state and 'backbone.ln1.bias' not in state


def test_a_pretrained_classifier_checkpoint_loads_as_usual(tmp_path):
    """load_from a whole ViT classifier: the backbone keys match, its head is extra, adapters and heads new."""
    pretrained = str(tmp_path / 'vit.pth')
    vit_state = _pretrained_vit(pretrained)
    model = MODELS.build(dict(type='DynAdapterClassifier', backbone=vit_cfg(), head=dict(num_classes=NUM_CLASSES),
                              exit_every=2))
    load_checkpoint(model, pretrained)
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, vit_state[name]), name
