"""Several processes, GPUs or machines: the process group, the device of each process, and the
sharded stages.

* ``sepnms train`` under ``torchrun``: :func:`process_group` initialises ``torch.distributed``
  from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``)
  when ``WORLD_SIZE > 1`` - NCCL when the device is CUDA (each process on ``cuda:<LOCAL_RANK>``),
  gloo on CPU - and destroys it at the end; training wraps its step in DistributedDataParallel.
* ``propose``, ``encode-text`` and ``clip-ctx`` split their images across processes
  (:func:`run_sharded`): under torchrun each rank takes every ``WORLD_SIZE``-th image, all ranks
  meet at a barrier and rank 0 merges the part files; with ``--shard i/n`` (separate jobs, no
  process group) the parts wait for ``sepnms merge``.

Single-process runs never touch ``torch.distributed``.
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, Optional, Sequence, TypeVar

import torch
import torch.distributed as dist

from sepnms.errors import ConfigError

T = TypeVar("T")


def env_world() -> tuple[int, int, int]:
    """``(RANK, WORLD_SIZE, LOCAL_RANK)`` as torchrun sets them; ``(0, 1, 0)`` when absent."""
    try:
        return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise ConfigError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (as torchrun sets them)") from None


def rank_world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Rank 0 of the process group (or of torchrun's environment before the group exists)."""
    return rank_world()[0] == 0 and env_world()[0] == 0


def resolve_device(device: str) -> str:
    """The device this process uses: ``cuda`` becomes ``cuda:<LOCAL_RANK>`` under torchrun.

    Raises a ConfigError when CUDA is asked for and not available.
    """
    device = str(device)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device is {device!r} but CUDA is not available here (torch {torch.__version__}, "
                              f"CUDA build {torch.version.cuda}); use --device cpu")
        _, world, local = env_world()
        if device == "cuda" and world > 1:
            return f"cuda:{local}"
        index = torch.device(device).index
        if index is not None and index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif device != "cpu" and not device.startswith("mps"):
        raise ConfigError(f"device must be cpu, cuda or cuda:<index>, not {device!r}")
    return device


@contextlib.contextmanager
def process_group(device: str = "cpu") -> Iterator[tuple[int, int]]:
    """Initialise the default process group when ``WORLD_SIZE > 1`` (NCCL for a CUDA device,
    gloo otherwise) and destroy it on exit; yields ``(rank, world size)``.

    Re-entrant: inside an initialised group (the CLI's, or a user's) it does nothing, and only
    the call that created the group destroys it.
    """
    _, world, local = env_world()
    if world <= 1 or dist.is_initialized():
        yield rank_world()
        return
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if str(device).startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(backend, **({"device_id": torch.device("cuda", local)} if backend == "nccl" else {}))
    try:
        yield rank_world()
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if rank_world()[1] > 1:
        dist.barrier()


def _reduce_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Sum ``values`` element-wise over the ranks (float64); the values themselves without a group."""
    if rank_world()[1] == 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy ``src``'s buffers (BatchNorm running statistics) to every rank, so that evaluation
    gives the same result everywhere (each rank updated them on its own batches)."""
    if rank_world()[1] == 1:
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src)


def run_sharded(run: Callable[[tuple[int, int], bool], T], merge: Callable[[], T],
                shard: Optional[tuple[int, int]] = None) -> T:
    """Run a part-file stage over this process's share of the images.

    Args:
        run: ``run(shard, merge)`` does the stage for ``shard = (i, n)`` and merges the parts when
            ``merge`` is true and every image is covered.
        merge: merges the parts of all shards (raises if some are missing).
        shard: ``(i, n)`` given by the user (``--shard i/n``): shard ``i`` only; the parts are
            merged only when ``n == 1`` (else by ``sepnms merge`` once every shard is done).
    Without ``shard``, inside a process group of ``n > 1`` ranks, each rank does shard
    ``(rank, n)``; then all wait at a barrier, rank 0 merges, and all wait again (so every rank
    returns with the final file written).  Otherwise the whole stage runs here.
    """
    rank, world = rank_world()
    if shard is None and world > 1:
        result = run((rank, world), False)
        barrier()
        if rank == 0:
            result = merge()
        barrier()
        return result
    shard = shard or (0, 1)
    return run(shard, shard[1] == 1)
