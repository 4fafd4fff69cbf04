"""Softmax and logit gradient of one row chunk, in place, in plain PyTorch (any device).

The chunk driver (:mod:`arcloss._fused`) fills ``buf`` with ``dots[i, j] = xhat_i . W_j`` (embeddings
normalised, class centres *not*); the logits are ``z[i, j] = dots[i, j] * col_scale[j]`` with
``col_scale = s / |W_j|``, except the target column, whose logit ``target_logit[i] = s * phi(cos_iy)``
is given. Labels equal to -1 mean "target not in this block of classes" (used by the sharded loss).

The work is split into two calls so that a sharded loss can all-reduce the row statistics between them:

1. :func:`row_stats` returns each row's max logit ``m`` and ``sum_j exp(z_ij - m)``. It may leave ``buf`` in
   a state only :func:`logit_grad_` understands (here: ``exp(z - m)``).
2. :func:`logit_grad_` overwrites ``buf`` with ``d loss_i / d dots_ij`` up to a per-row factor that it
   returns (or ``None`` for 1), given the global row max and sum.

Every pass over ``buf`` is in place: on a CPU the cost of this stage is memory traffic, not arithmetic.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _rows_with_target(labels: Tensor) -> tuple[Tensor, Tensor]:
    rows = torch.arange(labels.shape[0], device=labels.device)
    has = labels >= 0
    return rows[has], labels[has]


def row_stats(buf: Tensor, labels: Tensor, col_scale: Tensor, target_logit: Tensor) -> tuple[Tensor, Tensor]:
    """Row max and sum of exponentials of the chunk's logits.

    Args:
        buf: ``(K, C)`` float32/64 dot products, modified in place.
        labels: ``(K,)`` int64 target column of each row in this block, or -1.
        col_scale: ``(C,)`` ``s / |W_j|``, ``buf.dtype``.
        target_logit: ``(K,)`` ``s * phi(cos_iy)``, ``buf.dtype``.

    Returns:
        ``(row_max, row_sum)``, each ``(K,)``.
    """
    rows, cols = _rows_with_target(labels)
    buf.mul_(col_scale)
    buf[rows, cols] = target_logit[rows]
    row_max = buf.amax(dim=1)
    buf.sub_(row_max[:, None]).exp_()
    return row_max, buf.sum(dim=1)


def logit_grad_(
    buf: Tensor,
    labels: Tensor,
    col_scale: Tensor,
    target_logit: Tensor,
    target_slope: Tensor,
    local_max: Tensor,
    global_max: Tensor,
    global_sum: Tensor,
) -> Tensor | None:
    """Overwrite ``buf`` (as left by :func:`row_stats`) with ``d loss_i / d dots_ij / row_factor_i``.

    ``loss_i = log(sum_j exp(z_ij)) - target_logit_i``, so ``d loss_i / d z_ij = p_ij - [j == y_i]`` and,
    through the target logit, ``d z_iy / d dots_iy = target_slope_i * s / |W_y|`` with
    ``target_slope = dphi/dcos``.

    Args:
        target_slope: ``(K,)`` ``dphi/dcos`` at the target (unscaled).
        local_max: ``(K,)`` the row max :func:`row_stats` returned for this buffer.
        global_max, global_sum: ``(K,)`` row max and sum of exponentials over *all* classes.

    Returns:
        The ``(K,)`` row factor, or ``None`` when it has been folded into ``buf``.
    """
    rows, cols = _rows_with_target(labels)
    p_target = torch.exp(target_logit[rows] - global_max[rows]) / global_sum[rows]
    # buf holds exp(z - local_max); p = buf * exp(local_max - global_max) / global_sum.
    row_factor = torch.exp(local_max - global_max) / global_sum
    buf.mul_(col_scale)
    if local_max is global_max:
        # One process: row_factor = 1 / row_sum >= 1 / C, so the target entry may be divided by it.
        buf[rows, cols] = (p_target - 1.0) * target_slope[rows] * (col_scale[cols] / row_factor[rows])
        return row_factor
    buf.mul_(row_factor[:, None])
    buf[rows, cols] = (p_target - 1.0) * target_slope[rows] * col_scale[cols]
    return None
