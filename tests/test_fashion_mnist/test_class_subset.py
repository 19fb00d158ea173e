"""ClassSubset: the chosen classes relabelled in their order, a seeded draw cut into disjoint parts, through the
wrapped dataset's own pipeline; bad arguments are one-line errors."""
import numpy as np
import pytest
from fmnist_fixtures import SIZES
from mmengine.registry import DATASETS

import pddr_mm  # noqa: F401  (registers ClassSubset)
from pddr_mm.datasets import ClassSubset


def _fmnist(root, test_mode=False):
    return dict(type='mmpretrain.FashionMNIST', data_prefix=root, test_mode=test_mode, download=False,
                pipeline=[dict(type='mmpretrain.PackInputs')])


def test_keeps_the_classes_relabelled_in_their_order(fixture_data_root):
    subset = DATASETS.build(dict(type='ClassSubset', dataset=_fmnist(fixture_data_root), classes=[7, 5, 9]))
    inner = subset.dataset
    labels = np.asarray(inner.get_gt_labels())
    assert len(subset) == int(np.isin(labels, [7, 5, 9]).sum()) == 15  # 5 images a class in the fixture
    assert subset.metainfo['classes'] == tuple(inner.metainfo['classes'][c] for c in (7, 5, 9))
    for k in range(len(subset)):
        original = int(labels[subset.indices[k]])
        assert int(subset.get_data_info(k)['gt_label']) == [7, 5, 9].index(original)
        sample = subset[k]  # the wrapped dataset's pipeline, with the new label
        assert int(sample['data_samples'].gt_label) == [7, 5, 9].index(original)
        np.testing.assert_array_equal(sample['inputs'][0].numpy(), inner.get_data_info(subset.indices[k])['img'])
    assert sorted(set(subset.get_gt_labels().tolist())) == [0, 1, 2]
    assert subset.indices == sorted(subset.indices)  # no draw: the dataset's order


def test_a_seeded_draw_cut_into_disjoint_parts(fixture_data_root):
    def part(p, seed=0):
        return ClassSubset(_fmnist(fixture_data_root), classes=list(range(10)), num_samples=30, part=p, seed=seed)

    train, val = part((0, 20)), part((20, 30))
    assert (len(train), len(val)) == (20, 10) and not set(train.indices) & set(val.indices)
    assert part((0, 20)).indices == train.indices  # the same seed, the same images
    assert part((0, 20), seed=1).indices != train.indices
    state = np.random.get_state()[1].copy()
    part((0, 20), seed=3)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # the global random state is untouched
    test = ClassSubset(_fmnist(fixture_data_root, test_mode=True), classes=[5, 6])
    assert len(test) == 2 * SIZES['t10k'] // 10


@pytest.mark.parametrize('kwargs, match', [
    (dict(classes=[]), r'classes must be distinct class indices of FashionMNIST \(0..9\), got \[\]'),
    (dict(classes=[1, 1]), 'classes must be distinct'),
    (dict(classes=[10]), 'classes must be distinct'),
    (dict(classes=[0], num_samples=6), r'num_samples must be in \[1, 5\] \(the images of classes \[0\]\), got 6'),
    (dict(classes=[0, 1], part=(5, 11)), r'part must be \(start, stop\) with 0 <= start < stop <= 10, got \(5, 11\)'),
])
def test_bad_arguments(fixture_data_root, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClassSubset(_fmnist(fixture_data_root), **kwargs)
