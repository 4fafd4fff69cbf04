"""The target cosines ``cos(theta_iy)``, computed exactly before the margin is applied.

They are computed in the accumulation dtype (float32 under autocast) from the target centres alone
(``N x D`` work), never read back from a reduced-precision GEMM: the margin is applied to an accurate cosine.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from .chunked import NORM_EPS, normalize_rows
from .plan import ShardSpec, accumulation_dtype

__all__ = ["target_cosines"]


def target_cosines(
    x: Tensor, weight: Tensor, labels: Tensor, sub_centers: int, shard: ShardSpec | None
) -> tuple[Tensor, Tensor]:
    """Each row's cosine to its class centre (the best sub-centre), and how many shards own its label.

    Args:
        x: ``(N, D)`` embeddings.
        weight: ``(D, C * sub_centers)`` class centres of this process.
        labels: ``(N,)`` int64 class among this process's classes; anything outside ``[0, C)`` is not owned
            here (-1: another shard's class).
        sub_centers: K centres per class, class c owning columns ``c*K .. c*K+K-1``.
        shard: sum the owners' cosines over the process group, so that every rank has every row's.

    Returns:
        ``(cos, owners)``, each ``(N,)`` in the accumulation dtype; ``cos`` is 0 where no shard owns the label,
        ``owners`` is 1 for every valid label.
    """
    acc = accumulation_dtype(x.dtype, weight.dtype)
    d, columns = weight.shape
    num_classes = columns // sub_centers
    owned = (labels >= 0) & (labels < num_classes)
    classes = torch.where(owned, labels, 0)
    xhat, _ = normalize_rows(x, acc)
    if sub_centers == 1:
        centres = weight.index_select(1, classes).to(acc)  # (D, N)
        cos = (xhat * centres.t()).sum(1) / torch.linalg.vector_norm(centres, dim=0).clamp_min(NORM_EPS)
    else:
        offsets = torch.arange(sub_centers, device=labels.device)
        index = (classes[:, None] * sub_centers + offsets).flatten()
        centres = weight.index_select(1, index).to(acc).view(d, -1, sub_centers)  # (D, N, K)
        dots = torch.einsum("nd,dnk->nk", xhat, centres)
        cos = (dots / torch.linalg.vector_norm(centres, dim=0).clamp_min(NORM_EPS)).amax(dim=1)
    both = torch.stack([torch.where(owned, cos, 0.0), owned.to(acc)])
    if shard is not None:
        shard.all_reduce_(both, dist.ReduceOp.SUM)
    return both[0], both[1]
