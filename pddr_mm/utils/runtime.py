"""What the tools set up before building a Runner."""
import os
import subprocess
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config


def setup_runtime(cfg: Config) -> Config:
    """Make a config run where it is launched, in place; returns ``cfg``.

    Without a GPU (NCCL needs one) the backend becomes gloo, so ``tools/dist_train.sh`` works unchanged on
    a CPU-only machine. mmengine 0.10.7's ``init_dist`` calls ``torch.cuda.set_device``, which fails
    there, and wraps the model in DDP with ``device_ids=[LOCAL_RANK]``, which CPU modules reject; so for
    a distributed launcher on CPU the process group is started here (the Runner then skips its own
    ``init_dist``) and the DDP wrapper gets ``device_ids=None``.
    """
    if torch.cuda.is_available():
        return cfg
    set_cpu_threads(cfg.get('cpu_threads', None))
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'
    launcher = cfg.get('launcher', 'none')
    if launcher in (None, 'none'):
        return cfg
    if cfg.get('sync_bn', None) is not None:
        raise ValueError('sync_bn needs GPUs (torch SyncBatchNorm runs on CUDA only); drop it for CPU runs')
    init_cpu_dist(launcher, backend=dist_cfg['backend'])
    wrapper = cfg.get('model_wrapper_cfg', None) or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper.setdefault('device_ids', None)
    cfg.model_wrapper_cfg = wrapper
    return cfg


def set_cpu_threads(threads: Optional[int] = None) -> int:
    """Set torch's intra-op threads of a CPU run; returns the count now in use.

    ``threads`` (a config's ``cpu_threads``) wins, then ``OMP_NUM_THREADS``; otherwise the cores are
    shared between the processes of this machine (torch would give each of them all the cores).
    Small models are better off with one thread: their ops are too small to split, and OpenMP threads
    that wait on each other stall whenever the cores are shared with other work.
    """
    if threads:
        torch.set_num_threads(int(threads))
    elif 'OMP_NUM_THREADS' not in os.environ:
        local_procs = int(os.environ.get('LOCAL_WORLD_SIZE', os.environ.get('SLURM_NTASKS_PER_NODE', '1')))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(local_procs, 1)))
    return torch.get_num_threads()


def init_cpu_dist(launcher: str, backend: str = 'gloo', timeout_s: int = 1800) -> None:
    """Start the process group of a CPU-only run from torchrun's or slurm's environment variables."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return
    needed = dict(slurm=('SLURM_PROCID', 'SLURM_NTASKS'), pytorch=('RANK', 'WORLD_SIZE')).get(launcher, ())
    missing = [k for k in needed if k not in os.environ]
    if missing:
        starter = dict(slurm='srun (tools/slurm_train.sh)', pytorch='torchrun (tools/dist_train.sh)')[launcher]
        raise RuntimeError(f'--launcher {launcher} needs {missing} in the environment, which {starter} sets; '
                           'to run a single process, leave out --launcher')
    if launcher == 'slurm':  # what mmengine's _init_dist_slurm derives, minus the GPU calls
        os.environ['RANK'] = os.environ['SLURM_PROCID']
        os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
        os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
        if 'MASTER_ADDR' not in os.environ:
            node_list = os.environ['SLURM_NODELIST']
            os.environ['MASTER_ADDR'] = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1')
        os.environ.setdefault('MASTER_PORT', '29500')
    elif launcher != 'pytorch':
        raise ValueError(f'launcher {launcher!r} is not supported without a GPU; use pytorch or slurm')
    torch_dist.init_process_group(backend=backend, rank=int(os.environ['RANK']),
                                  world_size=int(os.environ['WORLD_SIZE']), timeout=timedelta(seconds=timeout_s))
