"""Config rewriting: the deploy form (``deploy=True`` everywhere) and the plain baseline of a PDDR config.

Both walk the whole config, so they work on any detector or classifier whatever its PDDR parts are:
a PDDR module is a dict whose type is ``'PD' + plain type`` and that takes the PDDR keyword arguments
(``pddr_mm.ops.PD_ARGS``), or a ``PDConv2d`` (usually a ``conv_cfg``).
"""
import copy
import inspect
from typing import Any, Callable, Dict, Optional

from mmengine.config import Config, ConfigDict
from mmengine.registry import MODELS

from pddr_mm.ops import PD_ARGS, PDConv2d

PD_CONV = 'PDConv2d'


def _type_name(type_: Any) -> Optional[str]:
    """The bare registered name of a config ``type`` (scope prefix dropped), or None."""
    if isinstance(type_, str):
        return type_.split('.')[-1]
    if inspect.isclass(type_):
        return type_.__name__
    return None


def _lookup(name: str) -> Optional[type]:
    try:
        return MODELS.get(name)
    except Exception:  # a scope that is not installed, or a malformed name
        return None


def is_pd_conv_cfg(cfg: Any) -> bool:
    """True for a config dict that builds a PDConv2d."""
    return isinstance(cfg, dict) and (_type_name(cfg.get('type')) == PD_CONV or cfg.get('type') is PDConv2d)


def is_pddr_module_cfg(cfg: Any) -> bool:
    """True for a config dict of a PDDR module other than PDConv2d (PDResNet, PDFPN, PDRetinaHead, ...).

    The naming rule of the project (``'PD' + plain type``, taking the ``deploy`` argument) decides, so
    modules added later are recognised without a list to keep up to date.
    """
    if not isinstance(cfg, dict) or is_pd_conv_cfg(cfg):
        return False
    name = _type_name(cfg.get('type'))
    if not name or not name.startswith('PD') or len(name) <= 2:
        return False
    cls = cfg['type'] if inspect.isclass(cfg['type']) else _lookup(cfg['type'])
    if cls is None:  # not registered (yet): trust the name if the dict already carries PDDR arguments
        return any(k in cfg for k in PD_ARGS)
    try:  # a class, or a builder function registered as a module (PDDRBackbone)
        return 'deploy' in inspect.signature(cls if inspect.isfunction(cls) else cls.__init__).parameters
    except (TypeError, ValueError):
        return False


def _walk(node: Any, fn: Callable[[Any, Optional[str]], Any], key: Optional[str] = None) -> Any:
    """Rebuild ``node`` bottom-up, letting ``fn(value, key)`` replace each dict."""
    if isinstance(node, dict):
        out = type(node)() if isinstance(node, ConfigDict) else {}
        for k, v in node.items():
            out[k] = _walk(v, fn, k)
        return fn(out, key)
    if isinstance(node, (list, tuple)):
        return type(node)(_walk(v, fn, key) for v in node)
    return node


def _is_pretrained_init(init_cfg: Any) -> bool:
    return isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained'


def _drop_pretrained(init_cfg: Any) -> Any:
    if _is_pretrained_init(init_cfg):
        return None
    if isinstance(init_cfg, (list, tuple)):
        kept = [c for c in init_cfg if not _is_pretrained_init(c)]
        return kept or None
    return init_cfg


def count_pddr_cfgs(cfg: Dict) -> int:
    """How many PDDR module / PDConv2d dicts the config holds (0: nothing to deploy)."""
    found = []
    _walk(cfg, lambda d, k: found.append(1) if is_pd_conv_cfg(d) or is_pddr_module_cfg(d) else None)
    return len(found)


def deploy_model_cfg(model_cfg: Dict) -> Dict:
    """``model_cfg`` with ``deploy=True`` on every PDDR module and PDConv2d, and pretrained init dropped.

    The deploy checkpoint holds every weight, so loading pretrained weights at build time would only
    cost time (and fail where the file is not present).
    """

    def fn(d: Dict, key: Optional[str]) -> Dict:
        if is_pd_conv_cfg(d) or is_pddr_module_cfg(d):
            d['deploy'] = True
        if 'init_cfg' in d:
            d['init_cfg'] = _drop_pretrained(d['init_cfg'])
        return d

    return _walk(copy.deepcopy(model_cfg), fn)


def forward_path_model_cfg(model_cfg: Dict, forward_path: str) -> Dict:
    """``model_cfg`` with ``forward_path`` on every PDDR module and PDConv2d (backbone, neck, head and
    ``conv_cfg`` swaps alike), e.g. 'branches' to test a trained model branch by branch."""

    def fn(d: Dict, key: Optional[str]) -> Dict:
        if is_pd_conv_cfg(d) or is_pddr_module_cfg(d):
            d['forward_path'] = forward_path
        return d

    return _walk(copy.deepcopy(model_cfg), fn)


def plain_model_cfg(model_cfg: Dict) -> Dict:
    """The plain baseline of ``model_cfg``: PD types replaced by their plain types, PDDR arguments removed.

    ``PDConv2d`` becomes ``Conv2d`` (a ``conv_cfg`` therefore becomes ``dict(type='Conv2d')``, mmcv's
    default convolution), ``PDResNet`` becomes ``ResNet`` and so on. A PDDR module whose plain form is not
    its name without 'PD' says so with a ``plain_cfg(cfg)`` attribute: ``PDDRBackbone`` -> its ``backbone``.
    """

    def fn(d: Dict, key: Optional[str]) -> Dict:
        if is_pd_conv_cfg(d):
            d = type(d)((k, v) for k, v in d.items() if k not in PD_ARGS and k not in ('norm_cfg', 'type'))
            d['type'] = 'Conv2d'
        elif is_pddr_module_cfg(d):
            cls = d['type'] if inspect.isclass(d['type']) else _lookup(d['type'])
            if callable(getattr(cls, 'plain_cfg', None)):
                return cls.plain_cfg(d)
            d = type(d)((k, v) for k, v in d.items() if k not in PD_ARGS)
            type_ = d['type']
            name = _type_name(type_)
            plain = name[2:]
            if isinstance(type_, str) and '.' in type_:
                plain = type_.rsplit('.', 1)[0] + '.' + plain
            if _lookup(plain) is None and not isinstance(type_, str):
                raise KeyError(f'{name} has no plain counterpart {plain!r} in the MODELS registry')
            d['type'] = plain
        return d

    return _walk(copy.deepcopy(model_cfg), fn)


def to_deploy_config(cfg: Config) -> Config:
    """A copy of the whole config whose model builds in deploy (fused) form; ``load_from``/``resume`` cleared."""
    cfg = copy.deepcopy(cfg)
    if count_pddr_cfgs(cfg.model) == 0:
        raise ValueError('the config holds no PDDR module (no PD* type with deploy argument, no PDConv2d '
                         'conv_cfg): there is nothing to deploy')
    cfg.model = deploy_model_cfg(cfg.model)
    cfg.load_from = None
    cfg.resume = False
    return cfg


def to_plain_config(cfg: Config) -> Config:
    """A copy of the whole config whose model is the plain baseline (see :func:`plain_model_cfg`)."""
    cfg = copy.deepcopy(cfg)
    cfg.model = plain_model_cfg(cfg.model)
    return cfg

