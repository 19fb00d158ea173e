from .modules import set_module
from .runtime import setup_runtime
from .tensors import flatten_tensors, max_rel_error

__all__ = ['set_module', 'setup_runtime', 'flatten_tensors', 'max_rel_error']
