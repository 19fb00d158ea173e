"""model-index.yml and the configs' metafile.yml files (OpenMMLab's model index, as mim reads it)."""
import glob
import os.path as osp

import pytest
import yaml
from mmengine.config import Config

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
INDEXED_FOLDERS = ('resnet', 'retinanet', 'cascade_rcnn')
DOI_URL = 'https://doi.org/10.26599/BDMA.2024.9020087'


def load(path: str):
    with open(osp.join(REPO, path)) as f:
        return yaml.safe_load(f)


def metafiles():
    return load('model-index.yml')['Import']


def all_models():
    return [(meta, m) for meta in metafiles() for m in load(meta)['Models']]


def test_model_index_imports_one_metafile_per_config_folder():
    imports = metafiles()
    assert sorted(imports) == sorted(f'configs/{d}/metafile.yml' for d in INDEXED_FOLDERS)
    for path in imports:
        assert osp.isfile(osp.join(REPO, path)), path


@pytest.mark.parametrize('meta', [f'configs/{d}/metafile.yml' for d in INDEXED_FOLDERS])
def test_metafile_collections(meta):
    data = load(meta)
    assert set(data) == {'Collections', 'Models'}
    names = set()
    for coll in data['Collections']:
        names.add(coll['Name'])
        assert coll['Paper']['URL'] == DOI_URL
        assert coll['Paper']['Title'] == 'Parameter Disentanglement for Diverse Representations'
        assert coll['README'] == osp.join(osp.dirname(meta), 'README.md')
        assert osp.isfile(osp.join(REPO, coll['README']))
    for model in data['Models']:
        assert model['In Collection'] in names, model['Name']


def test_every_listed_config_exists_and_parses():
    names = [m['Name'] for _, m in all_models()]
    assert len(names) == len(set(names)), 'model names must be unique'
    for meta, model in all_models():
        path = model['Config']
        assert path.startswith(osp.dirname(meta) + '/'), (meta, path)
        assert osp.basename(path) == model['Name'] + '.py'
        assert osp.isfile(osp.join(REPO, path)), path
        cfg = Config.fromfile(osp.join(REPO, path))
        assert 'model' in cfg, path


def test_every_config_is_listed():
    listed = {m['Config'] for _, m in all_models()}
    on_disk = {osp.relpath(p, REPO) for d in INDEXED_FOLDERS for p in glob.glob(osp.join(REPO, 'configs', d, '*.py'))}
    assert on_disk, 'no configs found'
    assert on_disk - listed == set(), 'configs missing from the metafiles'
    assert listed - on_disk == set(), 'metafile entries without a config'


def test_results_are_the_papers_and_no_weights_are_claimed():
    """No weights are hosted; every result is marked as reported by the paper, and only models with a
    reported result carry one."""
    for _, model in all_models():
        assert 'Weights' not in model, model['Name']
        meta = model['Metadata']
        assert meta['Training Data'] in ('ImageNet-1k', 'COCO')
        if 'Results' in model:
            assert meta['Results Reported By'] == 'paper (authors)', model['Name']
            for result in model['Results']:
                assert set(result) == {'Task', 'Dataset', 'Metrics'}
                assert result['Metrics'] and all(isinstance(v, (int, float)) for v in result['Metrics'].values())
        else:
            assert meta['Results Reported By'].startswith('none'), model['Name']


def test_seed_numbers_spot_check():
    """A few figures against the seed tables (the reference README), so a typo in a metafile shows."""
    models = {m['Name']: m for _, m in all_models()}
    top1 = lambda name: models[name]['Results'][0]['Metrics']['Top 1 Accuracy']  # noqa: E731
    box = lambda name: models[name]['Results'][0]['Metrics']['box AP']  # noqa: E731
    assert top1('pd-b-resnet50_8xb32_in1k') == 77.3718 and top1('resnet50_8xb32_in1k') == 75.8974
    assert top1('pd-b-resnet18_8xb32_in1k') == 72.0873
    assert models['pd-b-resnet18_8xb32_in1k']['Metadata']['Parameters'] == 11762000
    assert box('retinanet_pd-b-r50_fpn_1x_coco') - box('retinanet_r50_fpn_1x_coco') == pytest.approx(1.7)
    assert box('cascade-rcnn_pd-b-r50_fpn_1x_coco') == 42.1
