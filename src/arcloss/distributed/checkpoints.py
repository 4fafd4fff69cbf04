"""Checkpoints of sharded losses: assemble the full ``W``, slice it for a rank, export a single-process loss."""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .sharding import ShardedLoss, Sharding, class_range

__all__ = ["gather_full_weight", "load_full_weight_", "shard_full_weight", "to_single_process"]

LossT = TypeVar("LossT", bound=ShardedLoss)


def _sharding(loss: ShardedLoss) -> Sharding:
    sharding = loss.sharding
    if sharding is None:
        raise ValueError(f"{type(loss).__name__} is not sharded (it was built without sharding=)")
    return sharding


def _full_shape(loss: ShardedLoss, sharding: Sharding) -> tuple[int, int]:
    return loss.W.shape[0], sharding.num_classes * loss.sub_centers


def gather_full_weight(loss: ShardedLoss, dst: int | None = 0) -> Tensor | None:
    """The full ``(embedding_size, num_classes * sub_centers)`` ``W`` assembled from every rank's shard.

    A collective: every rank of the loss's process group must call it. Returns the tensor on rank ``dst`` (a
    rank of the group) and ``None`` elsewhere; with ``dst=None`` every rank gets it. Shards travel one at a
    time, so the peak extra memory on a receiving rank is the full ``W`` plus one shard.
    """
    sharding = _sharding(loss)
    w = loss.W.detach()
    if sharding.world_size == 1:
        return w.clone()
    k = w.shape[1] // sharding.local_classes
    group = sharding.process_group
    full = None
    if dst is None or sharding.rank == dst:
        full = w.new_empty(_full_shape(loss, sharding))
    for rank in range(sharding.world_size):
        start, stop = (bound * k for bound in class_range(sharding.num_classes, sharding.world_size, rank))
        if rank == sharding.rank:
            if full is not None:
                full[:, start:stop].copy_(w)
            if dst is None:
                dist.broadcast(w.contiguous(), _global_rank(group, rank), group=group)
            elif rank != dst:
                dist.send(w.contiguous(), _global_rank(group, dst), group=group)
        elif full is not None:
            shard = w.new_empty(w.shape[0], stop - start)
            if dst is None:
                dist.broadcast(shard, _global_rank(group, rank), group=group)
            else:
                dist.recv(shard, _global_rank(group, rank), group=group)
            full[:, start:stop].copy_(shard)
    return full


def _global_rank(group: dist.ProcessGroup | None, rank: int) -> int:
    return rank if group is None else dist.get_global_rank(group, rank)


def shard_full_weight(full: Tensor, num_ranks: int, rank: int, sub_centers: int = 1) -> Tensor:
    """This rank's ``(D, local_classes * sub_centers)`` slice (a copy) of a full ``W``, as :func:`class_range`."""
    start, stop = class_range(full.shape[1] // sub_centers, num_ranks, rank)
    return full[:, start * sub_centers : stop * sub_centers].clone()


def load_full_weight_(loss: LossT, full: Tensor) -> LossT:
    """Copy this rank's slice of a full ``W`` (e.g. a single-process loss's) into ``loss.W``, in place.

    Not a collective: each rank reads the full tensor (e.g. ``torch.load(..., mmap=True)``).
    """
    sharding = _sharding(loss)
    expected = _full_shape(loss, sharding)
    if tuple(full.shape) != expected:
        raise ValueError(f"expected a {expected} W, got {tuple(full.shape)}")
    k = expected[1] // sharding.num_classes
    with torch.no_grad():
        loss.W.copy_(full[:, sharding.start * k : sharding.stop * k])
    return loss


def to_single_process(loss: LossT, dst: int | None = 0) -> LossT | None:
    """The same loss (same class, margin as it is now, options) unsharded, holding the full ``W``.

    A collective like :func:`gather_full_weight`; returns the module on ``dst`` and ``None`` elsewhere.
    """
    sharding = _sharding(loss)
    full = gather_full_weight(loss, dst)
    if full is None:
        return None
    memo = {id(loss.W): nn.Parameter(full, requires_grad=loss.W.requires_grad), id(sharding): None}
    return copy.deepcopy(loss, memo)
