"""Checkpoint loading under torch >= 2.6.

``torch.load`` defaults to ``weights_only=True`` since torch 2.6, and mmengine 0.10.x calls it without
the argument. Runner checkpoints hold numpy scalars and arrays and mmengine's ``HistoryBuffer`` in their
meta, so ``load_from``, ``--resume`` and ``init_cfg=dict(type='Pretrained')`` fail with
"Unsupported global". We allow-list exactly those types instead of turning the safe loader off.
"""
import functools

import torch


def _checkpoint_globals() -> list:
    import numpy as np
    from mmengine.logging import HistoryBuffer

    core = getattr(np, '_core', None) or np.core  # numpy >= 2 moved numpy.core to numpy._core
    found = [HistoryBuffer, np.ndarray, np.dtype, core.multiarray.scalar, core.multiarray._reconstruct]
    dtypes = getattr(np, 'dtypes', None)  # the dtype classes (Float64DType, ...), numpy >= 1.25
    if dtypes is not None:
        found += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    return found


def allow_mmengine_checkpoints() -> None:
    """Let mmengine's local checkpoint loading read runner checkpoints with ``weights_only=True``.

    The data types go on torch's global allow-list. ``HistoryBuffer`` also pickles its statistics
    methods as ``getattr(HistoryBuffer, 'min')``; ``getattr`` is allowed only inside mmengine's local
    loader, not for every ``torch.load`` of the process (the safe unpickler still refuses to call
    anything ``getattr`` returns).
    """
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:  # torch < 2.4 has no allow-list and does not need one
        return
    add(_checkpoint_globals())

    from mmengine.runner import checkpoint as mmengine_checkpoint
    original = mmengine_checkpoint.CheckpointLoader._schemes.get('')
    if original is None or getattr(original, '_pddr_wrapped', False):
        return

    @functools.wraps(original)
    def load_from_local(filename, map_location):
        with torch.serialization.safe_globals([getattr]):
            return original(filename, map_location)

    load_from_local._pddr_wrapped = True
    mmengine_checkpoint.CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
