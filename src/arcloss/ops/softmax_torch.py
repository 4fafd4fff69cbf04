"""Softmax and logit gradient of one row chunk, in place, in plain PyTorch (any device).

The :class:`~arcloss.ops.chunked.ChunkSoftmax` contract, and its specification: the chunked engine fills
``buf`` with ``dots[i, j] = xhat_i . W_j`` (embeddings normalised, class centres *not*); the logits are
``z[i, j] = dots[i, j] * col_scale[j]`` with ``col_scale = s / |W_j|``, except the target column, whose logit
``target_logit[i] = s * phi`` is given. Labels equal to -1 mean "target not in this block of classes" (a
sharded loss).

The work is split into two calls so that a sharded loss can all-reduce the row statistics between them:
:func:`row_stats` leaves ``exp(z - m)`` in ``buf``; :func:`logit_grad_` turns it into the gradient. Every pass
over ``buf`` is in place: on a CPU the cost of this stage is memory traffic, not arithmetic.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .chunk_softmax import ChunkTargets, RowStats


def _rows_with_target(labels: Tensor) -> tuple[Tensor, Tensor]:
    rows = torch.arange(labels.shape[0], device=labels.device)
    has = labels >= 0
    return rows[has], labels[has]


def row_stats(buf: Tensor, col_scale: Tensor, targets: ChunkTargets) -> RowStats:
    """Row max and sum of exponentials of the chunk's logits; leaves ``exp(z - row_max)`` in ``buf``.

    Args:
        buf: ``(K, C)`` float32/64 dot products, modified in place.
        col_scale: ``(C,)`` ``s / |W_j|``, ``buf.dtype``.
        targets: the target columns, logits (``buf.dtype``) and slopes.
    """
    rows, cols = _rows_with_target(targets.labels)
    buf.mul_(col_scale)
    buf[rows, cols] = targets.logit[rows]
    row_max = buf.amax(dim=1)
    buf.sub_(row_max[:, None]).exp_()
    return RowStats(row_max, buf.sum(dim=1))


def logit_grad_(
    buf: Tensor, col_scale: Tensor, targets: ChunkTargets, local: RowStats, total: RowStats | None
) -> Tensor | None:
    """Overwrite ``buf`` (as left by :func:`row_stats`) with ``d loss_i / d dots_ij / row_factor_i``.

    ``loss_i = log(sum_j exp(z_ij)) - target_logit_i``, so ``d loss_i / d z_ij = p_ij - [j == y_i]``; off
    target ``d z_ij / d buf_ij = col_scale_j``, at the target ``target_slope_i``.

    Args:
        local: what :func:`row_stats` returned for this buffer.
        total: row max and sum of exponentials over *all* classes (every shard), or ``None`` if ``local`` is.

    Returns:
        The ``(K,)`` row factor, or ``None`` when it has been folded into ``buf``.
    """
    rows, cols = _rows_with_target(targets.labels)
    stats = local if total is None else total
    p_target = torch.exp(targets.logit[rows] - stats.max[rows]) / stats.sum[rows]
    target_grad = (p_target - 1.0) * targets.slope[rows]
    # buf holds exp(z - local.max); p = buf * exp(local.max - total.max) / total.sum.
    row_factor = torch.exp(local.max - stats.max) / stats.sum
    buf.mul_(col_scale)
    if total is None:
        # All classes are here: row_factor = 1 / row_sum >= 1 / C, so the target entry may be divided by it.
        buf[rows, cols] = target_grad / row_factor[rows]
        return row_factor
    buf.mul_(row_factor[:, None])
    buf[rows, cols] = target_grad
    return None
