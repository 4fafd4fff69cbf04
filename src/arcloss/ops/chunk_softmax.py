"""The contract between the chunked engine and a chunk softmax: :class:`ChunkSoftmax`, :class:`ChunkTargets` and
:class:`RowStats`.

Implementations: :mod:`arcloss.ops.softmax_torch` (the specification) and :mod:`arcloss.ops.softmax_triton`.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from torch import Tensor

__all__ = ["ChunkSoftmax", "ChunkTargets", "RowStats"]


class ChunkTargets(NamedTuple):
    """The target column of each row of a chunk, ``(K,)`` each.

    Attributes:
        labels: int64 column of the target in this block of classes, or -1 (another shard's class).
        logit: the target logit ``s * phi`` (replaces the target column's logit).
        slope: derivative of the target logit in the target entry of the chunk buffer.
    """

    labels: Tensor
    logit: Tensor
    slope: Tensor


class RowStats(NamedTuple):
    """Each row's max logit and ``sum_j exp(z_ij - max)``, ``(K,)`` each."""

    max: Tensor
    sum: Tensor


class ChunkSoftmax(Protocol):
    """Softmax statistics and logit gradient of one row chunk, in place.

    ``buf`` ``(K, C)`` float32/64 holds ``dots[i, j] = xhat_i . W_j``; the logits are
    ``dots[i, j] * col_scale[j]`` except the target column ``targets.labels[i] >= 0``, whose logit is
    ``targets.logit[i]``.
    """

    def row_stats(self, buf: Tensor, col_scale: Tensor, targets: ChunkTargets) -> RowStats:
        """This chunk's row statistics. May leave ``buf`` in a state only :meth:`logit_grad_` reads."""
        ...

    def logit_grad_(
        self, buf: Tensor, col_scale: Tensor, targets: ChunkTargets, local: RowStats, total: RowStats | None
    ) -> Tensor | None:
        """Overwrite ``buf`` with ``d loss_i / d dots_ij`` divided by a row factor, returned (``None``: 1).

        ``local`` is what :meth:`row_stats` returned; ``total`` the statistics over all shards' classes, or
        ``None`` when this chunk holds every class (then ``local`` is the total).
        """
        ...
