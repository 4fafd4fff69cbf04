"""The contract between the chunked engine and a chunk softmax: :class:`ChunkSoftmax` and :class:`RowStats`.

Implementations: :mod:`arcloss.ops.softmax_torch` (the specification) and :mod:`arcloss.ops.softmax_triton`.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from torch import Tensor

__all__ = ["ChunkSoftmax", "RowStats"]


class RowStats(NamedTuple):
    """Each row's max logit and ``sum_j exp(z_ij - max)``, ``(K,)`` each."""

    max: Tensor
    sum: Tensor


class ChunkSoftmax(Protocol):
    """Softmax statistics and logit gradient of one row chunk, in place.

    ``buf`` ``(K, C)`` float32/64 holds ``dots[i, j] = xhat_i . W_j``; the logits are
    ``dots[i, j] * col_scale[j]`` except the target column ``labels[i] >= 0``, whose logit is
    ``target_logit[i]``; ``labels[i] == -1``: the target is in another shard's classes.
    """

    def row_stats(self, buf: Tensor, labels: Tensor, col_scale: Tensor, target_logit: Tensor) -> RowStats:
        """This chunk's row statistics. May leave ``buf`` in a state only :meth:`logit_grad_` reads."""
        ...

    def logit_grad_(
        self,
        buf: Tensor,
        labels: Tensor,
        col_scale: Tensor,
        target_logit: Tensor,
        target_slope: Tensor,
        local: RowStats,
        total: RowStats | None,
    ) -> Tensor | None:
        """Overwrite ``buf`` with ``d loss_i / d dots_ij`` divided by a row factor, returned (``None``: 1).

        ``local`` is what :meth:`row_stats` returned; ``total`` the statistics over all shards' classes, or
        ``None`` when this chunk holds every class (then ``local`` is the total).
        """
        ...
