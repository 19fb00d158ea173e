"""The model converters' user errors: one clear message naming the file, flag or layer, no traceback."""
import re

import pytest
import torch
from deploy_fixtures import CLS_CONFIG, load_tool, write_config
from mmengine.config import Config

from pddr_mm.deployment.checkpoint import build_model

reparameterize = load_tool('model_converters/reparameterize')
plain_to_pd = load_tool('model_converters/plain_to_pd')


def exit_message(main, argv) -> str:
    """The message a tool exits with (SystemExit carrying text: exit status 1, no traceback)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert isinstance(info.value.code, str), f'exited with {info.value.code!r}, not a message'
    return info.value.code


@pytest.fixture(scope='module')
def cls_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('errors')
    cfg_path = write_config(str(tmp / 'tiny_cls.py'), CLS_CONFIG)
    ckpt = str(tmp / 'epoch_1.pth')
    torch.save(dict(meta={}, state_dict=build_model(Config.fromfile(cfg_path)).state_dict()), ckpt)
    return tmp, cfg_path, ckpt


@pytest.mark.parametrize('kind,expected', [
    ('missing', 'does not exist'),
    ('empty', r'is empty \(0 bytes\)'),
    ('truncated', 'is truncated or corrupt'),
    ('random', 'is not a PyTorch checkpoint'),
])
def test_unreadable_checkpoint(cls_files, kind, expected):
    tmp, cfg_path, ckpt = cls_files
    bad = tmp / f'{kind}.pth'
    data = open(ckpt, 'rb').read()
    content = dict(empty=b'', truncated=data[:len(data) // 2], random=torch.randint(0, 256, (4096, ),
                   generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy().tobytes())
    if kind in content:
        bad.write_bytes(content[kind])
    message = exit_message(reparameterize.main, [cfg_path, str(bad), '--out-dir', str(tmp / kind)])
    assert f'checkpoint {bad} ' in message
    assert re.search(expected, message)
    assert 'weights_only' not in message and 'Traceback' not in message and '\n' not in message


def test_already_fused_checkpoint_or_config(cls_files):
    tmp, cfg_path, ckpt = cls_files
    deploy_cfg, deploy_ckpt = reparameterize.main([cfg_path, ckpt, '--out-dir', str(tmp / 'deploy')])
    message = exit_message(reparameterize.main, [cfg_path, deploy_ckpt])  # fused weights, training config
    assert 'already fused' in message and f'python tools/test.py {deploy_cfg} {deploy_ckpt}' in message
    assert 'no trainable PDDR layer' not in message
    for ckpt_path in (ckpt, deploy_ckpt):  # the deploy config, whatever the checkpoint
        message = exit_message(reparameterize.main, [deploy_cfg, ckpt_path])
        assert 'already a deploy (fused) config' in message and f'python tools/test.py {deploy_cfg}' in message


@pytest.mark.parametrize('argv,flag', [
    (['--check-shape', '0', '0'], '--check-shape'),
    (['--check-shape', '-32', '32'], '--check-shape'),
    (['--tolerance', '-1'], '--tolerance'),
    (['--tolerance', 'nan'], '--tolerance'),
])
def test_bad_numbers_are_argparse_errors(argv, flag, capsys):
    with pytest.raises(SystemExit) as info:
        reparameterize.parse_args(['cfg.py', 'ckpt.pth', *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f'argument {flag}' in err and 'must be' in err


def plain_resnet18(path, base_channels=64) -> str:
    from mmdet.models.backbones import ResNet
    torch.save(dict(state_dict=ResNet(18, base_channels=base_channels).state_dict()), str(path))
    return str(path)


def test_plain_to_pd_on_a_pddr_checkpoint(tmp_path):
    src = plain_resnet18(tmp_path / 'r18.pth', base_channels=8)
    plain_to_pd.main([src, str(tmp_path / 'pd.pth'), '--branch-groups', '4'])
    message = exit_message(plain_to_pd.main, [str(tmp_path / 'pd.pth'), str(tmp_path / 'again.pth')])
    assert 'pd.pth is already a PDDR checkpoint' in message and '.branches.' in message
    assert 'pass the plain checkpoint' in message and not (tmp_path / 'again.pth').exists()


def test_plain_to_pd_branch_groups_that_do_not_fit(tmp_path):
    src = plain_resnet18(tmp_path / 'r18.pth')  # layer1 has 64 channels
    message = exit_message(plain_to_pd.main, [src, str(tmp_path / 'pd.pth'), '--branch-groups', '48'])
    assert message.startswith('plain_to_pd.py: --branch-groups 48 does not fit layer layer1.0.conv1: ')
    assert 'divide in_channels=64' in message


def test_plain_to_pd_unreadable_checkpoint(tmp_path):
    (tmp_path / 'empty.pth').write_bytes(b'')
    message = exit_message(plain_to_pd.main, [str(tmp_path / 'empty.pth'), str(tmp_path / 'pd.pth')])
    assert 'empty.pth is empty (0 bytes)' in message


def test_config_without_pddr_or_checkpoint_of_another_model(cls_files):
    from pddr_mm.deployment import to_plain_config
    tmp, cfg_path, ckpt = cls_files
    plain_cfg = to_plain_config(Config.fromfile(cfg_path))
    plain_path = str(tmp / 'plain_cls.py')
    plain_cfg.dump(plain_path)
    message = exit_message(reparameterize.main, [plain_path, ckpt])
    assert f'{plain_path} holds no PDDR module' in message and 'nothing to deploy' in message
    plain_ckpt = str(tmp / 'plain.pth')
    torch.save(dict(state_dict=build_model(plain_cfg).state_dict()), plain_ckpt)
    message = exit_message(reparameterize.main, [cfg_path, plain_ckpt])
    assert f'checkpoint {plain_ckpt} does not fit the model of {cfg_path}' in message
