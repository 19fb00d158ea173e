import pytest
from mmengine.registry import DefaultScope


def _mmpretrain_scope():
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


# Dyn-Adapter lives in mmpretrain's registries: build in its scope, whatever an earlier test left current
# (module-scoped fixtures such as a pretrained checkpoint build before any function-scoped one)
mmpretrain_scope_module = pytest.fixture(scope='module', autouse=True)(_mmpretrain_scope)
mmpretrain_scope = pytest.fixture(autouse=True)(_mmpretrain_scope)
