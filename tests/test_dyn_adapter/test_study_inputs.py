"""The study's input transform: grey crops, each standardised on its own (PerImageStandardize), as the
transfer and pretraining configs build them."""
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import DATASETS, MODELS, TRANSFORMS

import pddr_mm  # noqa: F401

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
STUDY = ['vit-tiny-p4_shapes-cls.py', 'dyn-adapter_vit-tiny-p4_shapes-cls-hard.py',
         'linear-probe_vit-tiny-p4_shapes-cls-hard.py']


def test_standardises_each_image_over_all_pixels():
    rng = np.random.default_rng(0)
    img = (rng.random((8, 6, 3)) * 200 + 30).astype(np.uint8)
    out = TRANSFORMS.build(dict(type='PerImageStandardize'))(dict(img=img))['img']
    assert out.dtype == np.float32 and out.shape == img.shape
    ref = (img.astype(np.float64) - img.mean()) / img.std()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # the same image brighter and with more contrast gives the same result
    out2 = TRANSFORMS.build(dict(type='PerImageStandardize'))(dict(img=img.astype(np.float32) * 1.1 + 5))['img']
    np.testing.assert_allclose(out2, out, atol=1e-4)


def test_flat_image_gives_zeros_not_nan():
    out = TRANSFORMS.build(dict(type='PerImageStandardize'))(dict(img=np.full((4, 4, 3), 77, np.uint8)))['img']
    assert np.all(out == 0)


@pytest.mark.parametrize('name', STUDY)
def test_study_configs_feed_grey_standardised_crops(name, tmp_path):
    rng = np.random.default_rng(1)
    for split in ('train', 'val'):
        for cls in ('a', 'b'):
            osp_dir = tmp_path / split / cls
            osp_dir.mkdir(parents=True)
            for i in range(2):
                cv2.imwrite(str(osp_dir / f'{i}.png'), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'dyn_adapter', name))
    init_default_scope(cfg.default_scope)
    preprocessor = MODELS.build(dict(type='ClsDataPreprocessor', **cfg.data_preprocessor))
    for loader, training in ((cfg.train_dataloader, True), (cfg.val_dataloader, False)):
        dataset = DATASETS.build(dict(loader.dataset, data_root=str(tmp_path)))
        batch = preprocessor(dict(inputs=[dataset[i]['inputs'] for i in range(4)],
                                  data_samples=[dataset[i]['data_samples'] for i in range(4)]), training)
        x = batch['inputs']
        assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
        torch.testing.assert_close(x[:, 0], x[:, 2])  # grey, three equal channels
        flat = x.flatten(1)
        torch.testing.assert_close(flat.mean(1), torch.zeros(4), atol=1e-5, rtol=0)
        torch.testing.assert_close(flat.std(1, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
