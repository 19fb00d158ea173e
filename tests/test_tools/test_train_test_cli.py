"""tools/train.py and tools/test.py turn their arguments into the config the runner gets (the runner is
replaced by a recorder: nothing trains)."""
import importlib.util
import os.path as osp
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def load_tool(rel: str):
    spec = importlib.util.spec_from_file_location(f'cli_{osp.basename(rel)}', osp.join(REPO, 'tools', rel + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Recorder:
    cfg = None

    @classmethod
    def from_cfg(cls, cfg):
        cls.cfg = cfg
        return cls()

    def train(self):
        pass

    def test(self):
        pass


def run_tool(rel, argv, monkeypatch):
    tool = load_tool(rel)
    monkeypatch.setattr(tool, 'Runner', Recorder)
    monkeypatch.setattr(sys, 'argv', [rel] + argv)
    tool.main() if rel == 'train' else tool.main(argv)
    return Recorder.cfg


@pytest.mark.parametrize('config', ['configs/resnet/pd-b-resnet18_8xb32_in1k.py',  # mmpretrain: no 'enable'
                                    'configs/retinanet/retinanet_pd-b-r50_fpn_1x_coco.py'])  # mmdet: enable=False
def test_auto_scale_lr_on_mmpretrain_and_mmdet_configs(config, tmp_path, monkeypatch):
    cfg = run_tool('train', [osp.join(REPO, config), '--auto-scale-lr', '--work-dir', str(tmp_path)], monkeypatch)
    assert cfg.auto_scale_lr.enable is True and cfg.auto_scale_lr.base_batch_size > 0


def test_auto_scale_lr_without_a_base_batch_size_is_a_clear_error(tmp_path, monkeypatch):
    cfg = tmp_path / 'no_scale.py'
    cfg.write_text(f"_base_ = '{REPO}/configs/resnet/pd-b-resnet18_8xb32_in1k.py'\nauto_scale_lr = None\n")
    with pytest.raises(RuntimeError, match='needs auto_scale_lr = dict\\(base_batch_size=...\\)'):
        run_tool('train', [str(cfg), '--auto-scale-lr', '--work-dir', str(tmp_path)], monkeypatch)


def test_deploy_switches_on_fusing_in_a_configured_deploy_hook(tmp_path, monkeypatch):
    cfg = tmp_path / 'with_hook.py'
    cfg.write_text(f"_base_ = '{REPO}/configs/resnet/pd-b-resnet18_8xb32_in1k.py'\n"
                   "custom_hooks = [dict(type='PDDRDeployHook', fuse_test=False, fuse_val=True)]\n")
    out = run_tool('test', [str(cfg), 'none.pth', '--deploy', '--work-dir', str(tmp_path)], monkeypatch)
    hooks = [h for h in out.custom_hooks if h['type'] == 'PDDRDeployHook']
    assert hooks == [dict(type='PDDRDeployHook', fuse_test=True, fuse_val=True)]


@pytest.mark.parametrize('config,dump', [
    ('configs/retinanet/retinanet_pd-b-r50_fpn_1x_coco.py', 'mmdet.DumpDetResults'),
    ('configs/resnet/pd-b-resnet18_8xb32_in1k.py', 'DumpResults')])
def test_out_dumps_as_the_library_does(config, dump, tmp_path, monkeypatch):
    from mmengine.registry import METRICS
    out = str(tmp_path / 'preds.pkl')
    cfg = run_tool('test', [osp.join(REPO, config), 'none.pth', '--out', out, '--work-dir', str(tmp_path)],
                   monkeypatch)
    assert cfg.test_evaluator[-1] == dict(type=dump, out_file_path=out)
    assert type(METRICS.build(cfg.test_evaluator[-1])).__name__ == dump.split('.')[-1]  # resolves in its registry


@pytest.mark.parametrize('config,tta_type', [('configs/retinanet/retinanet_pd-b-r50_fpn_1x_coco.py', 'DetTTAModel'),
                                             ('configs/resnet/pd-b-resnet18_8xb32_in1k.py',
                                              'mmpretrain.AverageClsScoreTTA')])
def test_tta_wraps_the_model_and_flips_the_test_pipeline(config, tta_type, tmp_path, monkeypatch):
    from mmengine.config import Config
    plain = Config.fromfile(osp.join(REPO, config))
    cfg = run_tool('test', [osp.join(REPO, config), 'none.pth', '--tta', '--work-dir', str(tmp_path)], monkeypatch)
    assert cfg.model.type == tta_type and cfg.model.module == plain.model
    pipeline = cfg.test_dataloader.dataset.pipeline
    if plain.get('tta_pipeline'):  # mmdet's RetinaNet config brings its own (multi-scale and flip)
        assert pipeline == plain.tta_pipeline
    else:  # otherwise flip TTA on the test pipeline
        assert pipeline[-1].type == 'TestTimeAug' and [t['prob'] for t in pipeline[-1].transforms[0]] == [1.0, 0.0]
        assert pipeline[:-1] == plain.test_dataloader.dataset.pipeline[:-1]
