"""Bad arguments to PDDRBackbone, convert_to_pd, PDConv2d and the PD modules raise a clear ValueError instead
of converting silently wrong (a string taken as a list of its characters, an unknown branch dropped everywhere)."""
import pytest
import torch
import torch.nn as nn

import pddr_mm  # noqa: F401  (registers PDDRBackbone)
from pddr_mm import PDConv2d
from pddr_mm.models.backbones.pddr_backbone import PDDRBackbone
from pddr_mm.models.convert import convert_to_pd
from pddr_mm.surgery import NothingConvertedError

RESNET = dict(type='mmdet.ResNet', depth=18, out_indices=(3, ))


def tiny():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding='same', bias=False), nn.BatchNorm2d(8))


@pytest.mark.parametrize('kwargs,words', [
    (dict(include='layer4'), 'include must be a list of regular expressions'),
    (dict(exclude='stem'), 'exclude must be a list of regular expressions'),
    (dict(branches='standard'), 'branches must be a non-empty sequence'),
    (dict(branches=('standard', 'standrad')), "unknown branch type 'standrad'"),
    (dict(kernel_sizes=3), 'kernel_sizes must be a list of kernel sizes'),
    (dict(mode='C'), r"mode must be one of \('A', 'B'\), got 'C'"),
    (dict(include=['layer[']), r"include: 'layer\[' is not a regular expression"),
    (dict(exclude=[3]), r"exclude: 3 is not a regular expression"),
    (dict(reduction=0), 'reduction must be an int >= 1'),
])
def test_convert_rejects_arguments_that_would_select_silently_wrong(kwargs, words):
    model = tiny()
    with pytest.raises(ValueError, match=words):
        convert_to_pd(model, torch.randn(2, 3, 8, 8), log=False, **kwargs)
    assert not any(isinstance(m, PDConv2d) for m in model.modules())  # nothing was touched


def test_convert_leaves_the_callers_inputs_alone_and_takes_same_padding():
    x = torch.randn(2, 3, 8, 8)
    model = tiny()
    report = convert_to_pd(model, x, log=False, branch_groups=4)
    assert not x.requires_grad and list(report['converted']) == ['0', '3']
    assert model[3].padding == (1, 1)


def test_pddr_backbone_that_converts_nothing_is_an_error():
    with pytest.raises(NothingConvertedError, match="PDDRBackbone converted no convolution of ResNet") as info:
        PDDRBackbone(RESNET, include=['no_such_layer'], trace_shape=(32, 32))
    assert info.value.report['converted'] == {} and 'not matched by include' in info.value.report['plain'].values()
    with pytest.raises(ValueError, match=r'trace_shape must be \(H, W\)'):
        PDDRBackbone(RESNET, trace_shape=224)
    with pytest.raises(TypeError, match=r"PDDRBackbone got unexpected argument\(s\) \['mdoe'\]"):
        PDDRBackbone(RESNET, mdoe='B')


@pytest.mark.parametrize('kwargs,words', [
    (dict(norm_cfg='BN'), "norm_cfg must be a dict with a 'type'"),
    (dict(padding='full'), "padding must be a number, a pair, 'valid' or 'same'"),
    (dict(padding='same', stride=2), "padding='same' needs stride 1"),
])
def test_pd_conv_bad_norm_cfg_or_padding_is_a_value_error(kwargs, words):
    with pytest.raises(ValueError, match=words):
        PDConv2d(8, 8, 3, branch_groups=4, **kwargs)


@pytest.mark.parametrize('padding,size', [('same', 9), ('valid', 7)])
def test_pd_conv_string_padding_as_nn_conv2d(padding, size):
    layer = PDConv2d(8, 8, 3, dilation=1, padding=padding, branch_groups=4).eval()
    assert layer(torch.randn(2, 8, 9, 9)).shape == (2, 8, size, size)


@pytest.mark.parametrize('type_', ['PDResNet', 'PDFPN'])
def test_pd_modules_reject_a_lone_branch_name(type_):
    from mmdet.registry import MODELS
    cfg = dict(type='PDResNet', depth=18) if type_ == 'PDResNet' else \
        dict(type='PDFPN', in_channels=[8, 16], out_channels=8, num_outs=2)
    with pytest.raises(ValueError, match="branches must be a non-empty sequence of branch types, got 'standard'"):
        MODELS.build(dict(cfg, branches='standard'))
