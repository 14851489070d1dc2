"""Distributed training under torchrun / `accelerate launch`, through fastai's `DistributedTrainer` (Accelerate).

We never spawn processes: the launcher sets RANK, WORLD_SIZE and LOCAL_RANK and starts one process per device.
fastai 2.8.12 needs three corrections here, all in `CifarDistributedTrainer` below, each naming the code it fixes.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from fastai.distributed import DistributedDL, DistributedTrainer

from .errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    "Where this process stands: rank, world size, local rank and its device."
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool: return self.rank == 0
    @property
    def distributed(self) -> bool: return self.world_size > 1

    def device(self, prefer=None) -> torch.device:
        "cuda:<local rank> when CUDA is there (unless `prefer` says otherwise), else the CPU."
        if prefer is not None and torch.device(prefer).type == 'cpu': return torch.device('cpu')
        return torch.device('cuda', self.local_rank) if torch.cuda.is_available() else torch.device('cpu')


def dist_info() -> DistInfo:
    "Read the launcher's environment (torchrun and accelerate set the same variables)."
    env = os.environ
    return DistInfo(int(env.get('RANK', 0)), int(env.get('WORLD_SIZE', 1)), int(env.get('LOCAL_RANK', 0)))


def init_process_group(info: DistInfo, device: torch.device) -> None:
    "Join the job's process group (NCCL on GPUs, gloo on CPUs) once, before anything needs a collective."
    if not info.distributed or dist.is_initialized(): return
    if device.type == 'cuda': torch.cuda.set_device(device)
    dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')


def broadcast_object(obj, info: DistInfo):
    "Rank 0's `obj` on every rank (e.g. the run folder's path, which rank 0 alone creates)."
    if not info.distributed: return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool) -> bool:
    """True on every rank if it is true on any: ranks must agree to stop at the same batch, or the ones that go on
    wait forever in the next gradient all-reduce."""
    if not (dist.is_available() and dist.is_initialized()): return flag
    dev = 'cuda' if dist.get_backend() == 'nccl' else 'cpu'
    t = torch.tensor([float(flag)], device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def peer_failure(e: BaseException) -> bool:
    "Did a collective fail because another rank went away (gloo: 'Connection closed by peer', NCCL: a timeout...)?"
    text = ''.join(str(x) for x in (e, e.__cause__, e.__context__) if x)
    return isinstance(e, dist.DistError) or any(s in text
                                                for s in ('gloo', 'NCCL', 'Connection closed', 'remote worker'))


def barrier() -> None:
    "Wait for every rank (no-op in a single process)."
    if dist.is_available() and dist.is_initialized(): dist.barrier()


class CpuSafeDistributedDL(DistributedDL):
    "fastai's `DistributedDL._broadcast` moves the index tensor to CUDA unconditionally ('Found no NVIDIA driver')."
    def _broadcast(self, t, rank):
        t = torch.LongTensor(t)
        if dist.get_backend() == 'nccl': t = t.cuda()  # NCCL needs CUDA tensors; gloo works on CPU ones
        dist.broadcast(t, rank)
        return t.cpu().tolist()


class CifarDistributedTrainer(DistributedTrainer):
    """fastai's `DistributedTrainer` (DDP through Accelerate), corrected for fastai 2.8.12:
    1. `DistributedTrainer.__init__` builds `Accelerator()`: on a CPU it needs `cpu=True`, or Accelerate reports no
       distribution and `prepare` leaves the model unwrapped;
    2. `DistributedTrainer.before_fit` converts to SyncBatchNorm, which only works on GPU modules: asked for only on
       CUDA;
    3. `DistributedTrainer._wrap_dl` wraps every loader in `DistributedDL`: our fast engine shards itself by rank
       (and validates on the whole test set), and DataBlock loaders get `CpuSafeDistributedDL`."""
    def __init__(self, sync_bn: bool = False, cpu: bool = False):
        if sync_bn and cpu: raise ConfigError("sync_bn needs CUDA: torch's SyncBatchNorm only works with GPU modules.")
        super().__init__(sync_bn=sync_bn, cpu=cpu)

    def _wrap_dl(self, dl):
        from .data.fast import FastDL
        if isinstance(dl, (FastDL, DistributedDL)): return dl
        return CpuSafeDistributedDL(dl, device=self.learn.model.device)


@contextmanager
def distrib_ctx(learn, info: DistInfo, sync_bn: bool = False):
    "Like fastai's `Learner.distrib_ctx`, with `CifarDistributedTrainer`; a no-op in a single process."
    if not info.distributed:
        yield learn
        return
    cb = CifarDistributedTrainer(sync_bn=sync_bn, cpu=torch.device(learn.dls.device).type == 'cpu')
    learn.add_cb(cb)
    try: yield learn
    finally: learn.remove_cb(cb)
