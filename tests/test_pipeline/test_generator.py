"""The shapes generator: deterministic by seed, valid COCO, classification crops per class."""
import filecmp
import json
import os
import os.path as osp

import generate_shapes_dataset as gen
import pytest
from pycocotools.coco import COCO


def _files(root):
    return sorted(osp.relpath(osp.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    args = ['--num-train', '6', '--num-val', '3', '--img-size', '64', '--max-size', '30']
    a, b, c = (str(tmp_path / n) for n in 'abc')
    gen.main(['--out', a, '--seed', '3'] + args)
    gen.main(['--out', b, '--seed', '3'] + args)
    gen.main(['--out', c, '--seed', '4'] + args)
    files = _files(a)
    assert files == _files(b) and len(files) > 9
    _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert mismatch == [] and errors == []
    assert open(osp.join(a, 'annotations/instances_train.json')).read() != \
        open(osp.join(c, 'annotations/instances_train.json')).read()


def test_coco_format_and_crops(tiny_shapes):
    coco = COCO(osp.join(tiny_shapes, 'annotations', 'instances_val.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(gen.CLASSES)
    assert len(coco.getImgIds()) == 8
    anns = coco.loadAnns(coco.getAnnIds())
    assert {a['image_id'] for a in anns} == set(coco.getImgIds())  # at least one object per image
    for ann in anns:
        img = coco.loadImgs(ann['image_id'])[0]
        x, y, w, h = ann['bbox']
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= img['width'] and y + h <= img['height']
        assert osp.isfile(osp.join(tiny_shapes, 'images', img['file_name']))
    with open(osp.join(tiny_shapes, 'annotations', 'instances_train.json')) as f:
        n_train = len(json.load(f)['annotations'])
    crops = [f for f in _files(osp.join(tiny_shapes, 'cls', 'train')) if f.endswith('.png')]
    assert len(crops) == n_train
    assert {osp.dirname(f) for f in crops} <= set(gen.CLASSES)


def test_regenerating_needs_force_and_leaves_no_old_files(tmp_path):
    args = ['--img-size', '64', '--max-size', '30']
    out, fresh = str(tmp_path / 'out'), str(tmp_path / 'fresh')
    gen.main(['--out', out, '--num-train', '6', '--num-val', '3'] + args)
    with pytest.raises(SystemExit, match='already holds a generated set'):
        gen.main(['--out', out, '--num-train', '2', '--num-val', '1'] + args)
    gen.main(['--out', out, '--num-train', '2', '--num-val', '1', '--force'] + args)
    gen.main(['--out', fresh, '--num-train', '2', '--num-val', '1'] + args)
    assert _files(out) == _files(fresh)  # the 6-image set's extra images and crops are gone
