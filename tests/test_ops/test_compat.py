"""importing pddr_mm lets mmengine load runner checkpoints under torch >= 2.6 (weights_only)."""
import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import _load_checkpoint

import pddr_mm  # noqa: F401


def test_runner_style_meta_loads(tmp_path):
    buf = HistoryBuffer()
    buf.update(np.float64(1.5))
    ckpt = dict(
        meta=dict(epoch=1, iter=np.int64(7), seed=np.int64(3), message_hub=dict(log_scalars={'loss': buf}),
                  arr=np.arange(3, dtype=np.float32)),
        state_dict={'w': torch.ones(2)})
    path = tmp_path / 'ckpt.pth'
    torch.save(ckpt, path)
    loaded = _load_checkpoint(str(path), map_location='cpu')
    assert loaded['meta']['iter'] == 7
    assert loaded['meta']['message_hub']['log_scalars']['loss'].current() == 1.5
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))
