import pytest
from mmengine.registry import DefaultScope


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    """Dyn-Adapter lives in mmpretrain's registries: build in its scope, whatever an earlier test left current."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield
