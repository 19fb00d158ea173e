"""Fixtures of the Fashion-MNIST tests: tiny idx archives and an unpacked set (fmnist_fixtures)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from fmnist_fixtures import SIZES, md5s, write_idx_gz  # noqa: E402


@pytest.fixture
def fixture_src(tmp_path):
    """A folder of four tiny .gz idx files and their MD5s (the tool's ``checksums``)."""
    src = tmp_path / 'src'
    src.mkdir()
    for k, (split, n) in enumerate(SIZES.items()):
        write_idx_gz(str(src), split, n, k)
    return str(src), md5s(str(src))


@pytest.fixture(scope='module')
def fixture_data_root(tmp_path_factory):
    """An unpacked tiny set, as ``tools/misc/get_fashion_mnist.py`` leaves it, for the config tests."""
    import get_fashion_mnist
    src = str(tmp_path_factory.mktemp('fmnist_src'))
    for k, (split, n) in enumerate(SIZES.items()):
        write_idx_gz(src, split, n, k)
    out = str(tmp_path_factory.mktemp('fmnist') / 'fashion_mnist')
    get_fashion_mnist.get_fashion_mnist(out, src, use_apt=False, checksums=md5s(src))
    return out
