"""Config rewriting: the deploy form (``deploy=True`` everywhere) and the plain baseline of a PDDR config.

Both walk the whole config, so they work on any detector or classifier whatever its PDDR parts are: a
PDDR module is a dict whose type is one of pddr_mm's own modules (``PDResNet``, ``PDDRBackbone``, ...)
or a ``PDConv2d`` (usually a ``conv_cfg``). Types of other packages are never touched, whatever their name.
"""
import copy
from typing import Any, Callable, Dict, Iterator, Optional

from mmengine.config import Config
from mmengine.registry import HOOKS, MODELS, Registry

from pddr_mm.ops import PD_ARGS

PD_CONV = 'PDConv2d'
PACKAGE = 'pddr_mm'


def _type_name(type_: Any) -> Optional[str]:
    """The bare registered name of a config ``type`` (scope prefix dropped), or None."""
    return type_.split('.')[-1] if isinstance(type_, str) else getattr(type_, '__name__', None)


def _lookup(type_: Any, registry: Registry = MODELS) -> Optional[Callable]:
    """The class or builder function a config ``type`` names, or None where it cannot be resolved."""
    if callable(type_):
        return type_
    try:
        return registry.get(type_)
    except Exception:  # a scope that is not installed, or a malformed name
        return None


def _is_ours(obj: Any) -> bool:
    return (getattr(obj, '__module__', None) or '').startswith(PACKAGE + '.')


def _is_ours_cfg(cfg: Any, registry: Registry = MODELS) -> bool:
    """True for a config dict whose type is defined in the pddr_mm package (class or builder function);
    a type the registry cannot resolve counts if pddr_mm registered that name in it or one of its scopes."""
    if not isinstance(cfg, dict) or 'type' not in cfg:
        return False
    obj = _lookup(cfg['type'], registry)
    if obj is not None:
        return _is_ours(obj)
    name = _type_name(cfg['type'])
    return any(_is_ours(reg.module_dict.get(name)) for reg in (registry, *registry.children.values()))


def is_pd_conv_cfg(cfg: Any) -> bool:
    """True for a config dict that builds a PDConv2d."""
    return _is_ours_cfg(cfg) and _type_name(cfg['type']) == PD_CONV


def is_pddr_module_cfg(cfg: Any) -> bool:
    """True for a config dict of a pddr_mm module other than PDConv2d (PDResNet, PDFPN, PDDRBackbone, ...).

    Decided by where the type is defined (the pddr_mm package), so a third-party ``PDHead`` is left alone.
    """
    return _is_ours_cfg(cfg) and _type_name(cfg['type']) != PD_CONV


def _walk(node: Any, fn: Callable[[Dict], Any]) -> Any:
    """Rebuild ``node`` bottom-up, letting ``fn(dict)`` replace each dict (``--cfg-options`` cannot reach
    every nested dict whatever its path)."""
    if isinstance(node, dict):
        return fn(type(node)((k, _walk(v, fn)) for k, v in node.items()))
    if isinstance(node, (list, tuple)):
        return type(node)(_walk(v, fn) for v in node)
    return node


def _drop_pretrained(init_cfg: Any) -> Any:
    def pretrained(c):
        return isinstance(c, dict) and c.get('type') == 'Pretrained'

    if isinstance(init_cfg, (list, tuple)):
        return [c for c in init_cfg if not pretrained(c)] or None
    return None if pretrained(init_cfg) else init_cfg


def _pddr_dicts(node: Any) -> Iterator[Dict]:
    """Every PDDR module / PDConv2d dict inside ``node``."""
    if isinstance(node, dict):
        yield from (d for v in node.values() for d in _pddr_dicts(v))
        if _is_ours_cfg(node):
            yield node
    elif isinstance(node, (list, tuple)):
        yield from (d for v in node for d in _pddr_dicts(v))


def count_pddr_cfgs(cfg: Dict) -> int:
    """How many PDDR module / PDConv2d dicts the config holds (0: nothing to deploy)."""
    return sum(1 for _ in _pddr_dicts(cfg))


def is_deploy_cfg(model_cfg: Dict) -> bool:
    """True if some PDDR module of the model config is already built in deploy (fused) form."""
    return any(d.get('deploy') for d in _pddr_dicts(model_cfg))


def _set_on_pddr(model_cfg: Dict, key: str, value: Any, drop_pretrained: bool = False) -> Dict:
    def fn(d: Dict) -> Dict:
        if _is_ours_cfg(d):
            d[key] = value
        if drop_pretrained and 'init_cfg' in d:
            d['init_cfg'] = _drop_pretrained(d['init_cfg'])
        return d

    return _walk(copy.deepcopy(model_cfg), fn)


def deploy_model_cfg(model_cfg: Dict) -> Dict:
    """``model_cfg`` with ``deploy=True`` on every PDDR module and PDConv2d, and pretrained init dropped
    (the deploy checkpoint holds every weight: loading pretrained ones would only cost time, or fail)."""
    return _set_on_pddr(model_cfg, 'deploy', True, drop_pretrained=True)


def forward_path_model_cfg(model_cfg: Dict, forward_path: str) -> Dict:
    """``model_cfg`` with ``forward_path`` on every PDDR module and PDConv2d, e.g. 'branches' to test a
    trained model branch by branch (``tools/run_demo.sh``)."""
    return _set_on_pddr(model_cfg, 'forward_path', forward_path)


def _plain_type(d: Dict) -> Any:
    """The plain type of a PDDR module dict: its name without 'PD', in the same scope."""
    type_, name = d['type'], _type_name(d['type'])
    plain = name[2:] if name.startswith('PD') else name
    if isinstance(type_, str):
        return type_[:len(type_) - len(name)] + plain
    if _lookup(plain) is None:
        raise KeyError(f'{name} has no plain counterpart {plain!r} in the MODELS registry')
    return plain


def plain_model_cfg(model_cfg: Dict) -> Dict:
    """The plain baseline of ``model_cfg``: PD types replaced by their plain types, PDDR arguments removed.

    ``PDConv2d`` becomes ``Conv2d`` (mmcv's default convolution), ``PDResNet`` becomes ``ResNet`` and so on.
    A PDDR module whose plain form is not its name without 'PD' says so with a ``plain_cfg(cfg)``
    attribute: ``PDDRBackbone`` -> its ``backbone``.
    """

    def fn(d: Dict) -> Dict:
        if not _is_ours_cfg(d):
            return d
        conv = is_pd_conv_cfg(d)
        plain_cfg = getattr(_lookup(d['type']), 'plain_cfg', None)
        if not conv and callable(plain_cfg):
            return plain_cfg(d)
        out = type(d)((k, v) for k, v in d.items() if k not in PD_ARGS + (('norm_cfg', ) if conv else ()))
        out['type'] = 'Conv2d' if conv else _plain_type(d)
        return out

    return _walk(copy.deepcopy(model_cfg), fn)


def to_deploy_config(cfg: Config) -> Config:
    """A copy of the whole config whose model builds in deploy (fused) form; ``load_from``/``resume`` cleared."""
    cfg = copy.deepcopy(cfg)
    if count_pddr_cfgs(cfg.model) == 0:
        raise ValueError(f'{cfg.filename or "the config"} holds no PDDR module (no pddr_mm type such as PDResNet '
                         'or PDDRBackbone, no PDConv2d conv_cfg): there is nothing to deploy')
    cfg.model = deploy_model_cfg(cfg.model)
    cfg.load_from = None
    cfg.resume = False
    return cfg


def to_plain_config(cfg: Config) -> Config:
    """A copy of the whole config whose model is the plain baseline (see :func:`plain_model_cfg`).

    It does not need pddr_mm: ``pddr_mm`` leaves ``custom_imports`` (dropped if nothing is left) and
    pddr_mm's hooks (``PDDRDeployHook``, ...) leave ``custom_hooks``.
    """
    cfg = copy.deepcopy(cfg)
    cfg.model = plain_model_cfg(cfg.model)
    imports = cfg.get('custom_imports')
    if isinstance(imports, dict):
        names = imports.get('imports', [])
        names = [names] if isinstance(names, str) else names
        kept = [n for n in names if n != PACKAGE and not n.startswith(PACKAGE + '.')]
        if kept:
            imports['imports'] = kept
        else:
            cfg.pop('custom_imports')
    if isinstance(cfg.get('custom_hooks'), list):
        cfg.custom_hooks = [h for h in cfg.custom_hooks if not _is_ours_cfg(h, HOOKS)]
    return cfg
