"""What the tools set up before building a Runner."""
import torch
from mmengine.config import Config


def setup_runtime(cfg: Config) -> Config:
    """Pick the gloo backend where no GPU is present (NCCL needs one), in place; returns ``cfg``.

    mmdet's and mmpretrain's default runtimes ask for NCCL; on a CPU-only machine the same config then
    trains across processes with gloo, so ``tools/dist_train.sh`` works unchanged there.
    """
    if not torch.cuda.is_available():
        env_cfg = cfg.setdefault('env_cfg', {})
        dist_cfg = env_cfg.setdefault('dist_cfg', {})
        if dist_cfg.get('backend', 'nccl') == 'nccl':
            dist_cfg['backend'] = 'gloo'
    return cfg
