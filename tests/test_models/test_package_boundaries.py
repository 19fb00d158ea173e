"""Each method's package reads on its own: PDDR (models, ops), RPG (rpg) and Dyn-Adapter (dyn_adapter) import
nothing of one another, and the backbone surgery they share lives in pddr_mm.surgery, which imports none of them."""
import ast
import glob
import os.path as osp

import pytest

import pddr_mm
from pddr_mm.models.backbones.pddr_backbone import PDDRBackbone
from pddr_mm.rpg import RPGBackbone
from pddr_mm.surgery import NothingConvertedError

PKG = osp.dirname(pddr_mm.__file__)
METHODS = {'pddr': ('models', 'ops'), 'rpg': ('rpg', ), 'dyn_adapter': ('dyn_adapter', )}
SHARED = ('surgery', )


def _imported_packages(path: str):
    """The pddr_mm subpackages a module imports from (absolute or relative), with the names it takes."""
    rel = osp.relpath(path, PKG).split(osp.sep)
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = rel[:-node.level] if node.level <= len(rel) - 1 else []
                parts = base + (node.module.split('.') if node.module else [])
            elif node.module and node.module.startswith('pddr_mm'):
                parts = node.module.split('.')[1:]
            else:
                continue
            yield (parts[0] if parts else ''), [a.name for a in node.names]


def _owner(sub: str):
    return next((m for m, subs in METHODS.items() if sub in subs), None)


@pytest.mark.parametrize('package', [s for subs in METHODS.values() for s in subs] + list(SHARED))
def test_no_package_imports_another_methods_code(package):
    files = glob.glob(osp.join(PKG, package, '**', '*.py'), recursive=True)
    assert files
    mine = _owner(package)
    for path in files:
        for sub, names in _imported_packages(path):
            other = _owner(sub)
            assert other in (None, mine), f'{osp.relpath(path, PKG)} imports {names} from {sub} ({other}\'s code)'
            if sub != package:
                private = [n for n in names if n.startswith('_')]
                assert not private, f'{osp.relpath(path, PKG)} imports private names {private} from {sub}'


def test_pddr_and_rpg_builders_share_the_surgery_and_its_error():
    resnet = dict(type='mmdet.ResNet', depth=18, base_channels=8, out_indices=(3, ))
    with pytest.raises(NothingConvertedError, match='PDDRBackbone converted no convolution'):
        PDDRBackbone(resnet, include=['nothing_matches'], trace_shape=(32, 32))
    with pytest.raises(NothingConvertedError, match='RPGBackbone converted no convolution'):
        RPGBackbone(resnet, ring_ratio=0.5, include=['nothing_matches'], trace_shape=(32, 32))
