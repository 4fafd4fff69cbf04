"""Partial class sampling (PartialFC, An et al., arXiv 2203.15565) for one shard of class centres.

Per training step each shard keeps every class that has a positive in the *global* batch plus a seeded
random subset of its other classes, ``num_sampled_columns(num_local, sample_rate)`` columns in all (or all
the positives if there are more). The loss is then a softmax over the sampled classes of all shards only.

The random choice depends on ``(seed, step, rank)`` alone, so a run is reproducible and a resumed run
samples what the uninterrupted one would have. Everything here works on local column indices
``0 .. num_local - 1`` of the shard.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A well-spread 63-bit seed from integers (splitmix64 steps); stable across processes and runs."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & _MASK64)) & _MASK64
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state & ((1 << 63) - 1)


def num_sampled_columns(num_local: int, sample_rate: float) -> int:
    """Columns a shard of ``num_local`` classes keeps per step when positives are fewer: ``ceil(rate * C)``."""
    return min(num_local, max(1, math.ceil(sample_rate * num_local)))


def sample_columns(positive: Tensor, num_local: int, sample_rate: float, seed: int, step: int, rank: int) -> Tensor:
    """The sorted local columns to use this step.

    Args:
        positive: ``(P,)`` int64 local columns that have a positive in the global batch (any order, unique).
        num_local: classes in this shard.
        sample_rate: fraction of the shard's classes to keep, in ``(0, 1]``.
        seed, step, rank: the random stream (a function of the three only).

    Returns:
        ``(K,)`` int64 sorted unique columns on ``positive.device``, ``K = max(P, num_sampled_columns)``; it
        contains every positive.
    """
    num_sample = num_sampled_columns(num_local, sample_rate)
    if positive.numel() >= num_sample:
        return positive.sort().values
    generator = torch.Generator().manual_seed(mix_seed(seed, step, rank))
    keys = torch.rand(num_local, generator=generator)
    keys[positive.cpu()] = 2.0  # above every random key: positives are always kept
    return torch.topk(keys, num_sample, sorted=False).indices.sort().values.to(positive.device)


def columns_of_labels(labels: Tensor, start: int, columns: Tensor | None, num_local: int) -> Tensor:
    """Each global label's position among this shard's (sampled) columns, or -1 where another shard owns it.

    Args:
        labels: ``(N,)`` int64 global class indices.
        start: first global class of the shard.
        columns: ``(K,)`` sorted sampled local columns, or ``None`` for all ``num_local`` columns.
        num_local: classes in this shard.

    Returns:
        ``(N,)`` int64 in ``[0, K)`` or -1.
    """
    local = labels - start
    owned = (local >= 0) & (local < num_local)
    if columns is None:
        return torch.where(owned, local, -1)
    position = torch.searchsorted(columns, local.clamp(0, num_local - 1))
    found = owned & (position < columns.numel())
    found &= columns[position.clamp_max(max(columns.numel() - 1, 0))] == local
    return torch.where(found, position, -1)
