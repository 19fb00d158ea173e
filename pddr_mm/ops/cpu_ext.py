"""The optional C++ form of ``combine_parts`` for CPU tensors (``csrc/combine.cpp``).

Built on first use with torch's JIT extension builder (a C++ compiler is needed, as for mmcv's ops;
the build is cached per user, so it runs once per machine). If it cannot be built, PDDR falls back to
the torch-op form with one warning: same results, more memory traffic. ``PDDR_CPU_EXT=0`` forces the
fallback, e.g. to compare the two.
"""
import logging
import os
import threading
import warnings
from types import ModuleType
from typing import Optional

_lock = threading.Lock()
_state = {'tried': False, 'module': None}


def cpu_ext() -> Optional[ModuleType]:
    """The compiled module, or None when it is disabled or cannot be built."""
    if _state['tried']:
        return _state['module']
    with _lock:
        if not _state['tried']:
            _state['module'] = _build() if os.environ.get('PDDR_CPU_EXT', '1') != '0' else None
            _state['tried'] = True
    return _state['module']


def _build() -> Optional[ModuleType]:
    try:
        # importing it logs a warning on machines without CUDA that says nothing about a CPU build
        logger = logging.getLogger('torch.utils.cpp_extension')
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            from torch.utils.cpp_extension import load
        finally:
            logger.setLevel(level)
        csrc = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'csrc')
        sources = [os.path.join(csrc, name) for name in ('combine.cpp', 'refine.cpp')]
        return load(name='pddr_mm_combine_cpu', sources=sources, extra_cflags=['-O3', '-fopenmp'],
                    extra_ldflags=['-fopenmp'],
                    verbose=False)
    except Exception as e:  # no compiler, no ninja, a read-only cache: the torch-op form still works
        warnings.warn(f'pddr_mm: the C++ combine op could not be built ({type(e).__name__}: {e}); using the '
                      'torch-op form (same results, slower on CPU)')
        return None
