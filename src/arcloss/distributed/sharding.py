"""Class centres sharded over ``torch.distributed`` ranks: an option of every loss module.

``ArcFaceLoss(C, D, sharding=Sharding(process_group=pg))`` holds ``W`` of shape ``(D, local_classes)``: each
rank of the group owns a contiguous block of classes (:func:`class_range`: the first ``C % world`` ranks hold
one class more). A forward, on every rank with its own batch (any size, 0 included):

1. the ranks agree on their inputs (sizes, dtypes, and any rank's shape or type error raises on every rank);
2. every rank's embeddings and labels are all-gathered: each rank sees the global batch;
3. the same pipeline as a single process (:func:`arcloss.functional.fused_margin_loss`) runs with a
   :class:`~arcloss.ops.ShardSpec` in its plan: the target cosines are summed from their owners and each
   chunk's softmax statistics are all-reduced, so the softmax is over every class of every rank and nothing
   of size ``N x C`` exists. The margin, validation, reductions, sub-centres and engines are those of the
   single-process loss.

Gradient convention (``grad_reduction``): the loss returned on every rank is the *global* loss (mean or sum
over the global batch; ``(N_global,)`` per-row losses for ``reduction="none"``, whose downstream reduction
must then be the same on every rank). ``W.grad`` on each rank is exactly the single-process gradient for
the rank's classes. DistributedDataParallel *averages* the backbone gradients over ranks, so with
``grad_reduction="mean"`` (default) each rank's ``embeddings.grad`` is ``world_size`` times the
single-process gradient for its rows and DDP's average yields single-process training on the global batch;
``"sum"`` gives exactly the single-process gradient. Keep the loss module itself out of DDP: its ``W``
differs per rank.

``sample_rate < 1`` is PartialFC (:mod:`arcloss.distributed.partial_fc`): in training mode each step uses
every class with a positive in the global batch plus a seeded random subset of the others.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .. import functional as F
from .._validation import check_choice, check_inputs, check_real
from ..margins import Margin
from ..ops import ShardSpec, accumulation_dtype
from ..ops.chunked import chunk_rows
from .collectives import agree_on_inputs, gather_embeddings, gather_rows, rank_world
from .partial_fc import columns_of_labels, mix_seed, num_sampled_columns, sample_columns

__all__ = ["Sharding", "class_range"]

_INIT_BLOCK = 4096  # columns per independently seeded block of the default initialisation


class ShardedLoss(Protocol):
    """What :meth:`Sharding.loss` reads of the loss module that owns it."""

    W: Tensor
    embedding_size: int
    sub_centers: int
    margin_fn: Margin
    scale: float
    reduction: F.Reduction
    sharding: Sharding | None
    backend: str
    rows_per_chunk: int | None
    validate: bool


def class_range(num_classes: int, world_size: int, rank: int) -> tuple[int, int]:
    """The global classes ``[start, stop)`` of ``rank``: contiguous, the first ``C % world`` ranks one more."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class Sharding(nn.Module):
    """How a loss's classes are split over ranks; pass one (per loss) as ``sharding=`` to any loss module.

    Args:
        process_group: the ranks that share the classes (default: the world group; none initialised: 1 rank).
        sample_rate: PartialFC fraction of each shard's classes used per training step, in ``(0, 1]``.
        seed: seeds the default initialisation of ``W`` and the class sampling (the same on every rank).
        grad_reduction: how the backbone gradients are reduced across ranks, ``"mean"`` (DDP) | ``"sum"``;
            see the module docstring.

    Attributes:
        rank, world_size: this process in ``process_group``.
        start, stop: this rank's global classes ``[start, stop)`` (once attached to a loss).
        sampling_step: sampled steps so far (saved in checkpoints, so a resumed run samples the same classes).
        last_sampled_classes: ``(K,)`` global classes used by the last sampled step on this rank, or None.
    """

    def __init__(
        self,
        process_group: dist.ProcessGroup | None = None,
        sample_rate: float = 1.0,
        seed: int = 0,
        grad_reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.process_group = process_group
        self.sample_rate = check_real("sample_rate", sample_rate)
        if not 0.0 < self.sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
        self.seed = int(seed)
        self.grad_reduction = check_choice("grad_reduction", grad_reduction, ("mean", "sum"))
        self.rank, self.world_size = rank_world(process_group)
        self.num_classes = 0
        self.start = self.stop = 0
        self.sampling_step = 0
        self.last_sampled_classes: Tensor | None = None

    def attach(self, num_classes: int) -> Sharding:
        """Split ``num_classes`` over the group; called once by the loss that takes this sharding."""
        if self.num_classes:
            raise ValueError("this Sharding already belongs to a loss: give each loss its own")
        if num_classes < self.world_size:
            raise ValueError(f"num_classes={num_classes} must be >= the world size {self.world_size}")
        self.num_classes = num_classes
        self.start, self.stop = class_range(num_classes, self.world_size, self.rank)
        return self

    @property
    def local_classes(self) -> int:
        return self.stop - self.start

    @property
    def max_local_classes(self) -> int:
        return math.ceil(self.num_classes / self.world_size)

    def init_weight_(self, weight: Tensor, sub_centers: int) -> None:
        """N(0, 1) per entry from ``seed``, in blocks of global columns: the assembled full ``W`` does not
        depend on the number of ranks."""
        first, last = self.start * sub_centers, self.stop * sub_centers
        for block in range(first // _INIT_BLOCK, (last - 1) // _INIT_BLOCK + 1):
            lo = block * _INIT_BLOCK
            generator = torch.Generator().manual_seed(mix_seed(self.seed, block))
            values = torch.randn(weight.shape[0], _INIT_BLOCK, generator=generator)
            keep = slice(max(first, lo), min(last, lo + _INIT_BLOCK))
            weight[:, keep.start - first : keep.stop - first].copy_(values[:, keep.start - lo : keep.stop - lo])

    def get_extra_state(self) -> dict:
        """Saved with the shard: its place in the global classes and the sampling step (for resuming)."""
        return {"num_classes": self.num_classes, "start": self.start, "stop": self.stop, "step": self.sampling_step}

    def set_extra_state(self, state: dict) -> None:
        saved = (state["num_classes"], state["start"], state["stop"])
        if saved != (self.num_classes, self.start, self.stop):
            raise ValueError(
                f"this shard holds classes [{self.start}, {self.stop}) of {self.num_classes}, the checkpoint "
                f"[{saved[1]}, {saved[2]}) of {saved[0]}: reshard through gather_full_weight/load_full_weight_"
            )
        self.sampling_step = int(state["step"])

    def loss(self, loss: ShardedLoss, embeddings: Tensor, labels: Tensor) -> Tensor:
        """``loss``'s value on the global batch; this rank passes its ``(n, D)`` embeddings and ``(n,)`` labels."""
        group, world = self.process_group, self.world_size
        try:
            embeddings, labels = check_inputs(embeddings, labels, loss.embedding_size, loss.W.device)
            error = None
        except (TypeError, ValueError) as caught:
            error = caught
        if world == 1:
            if error is not None:
                raise error
            sizes = [embeddings.shape[0]]
            x = x_replicated = embeddings
            all_labels = labels
        else:
            ok = error is None
            n, dtype = (embeddings.shape[0], embeddings.dtype) if ok else (0, None)
            sizes = agree_on_inputs(n, dtype, error, loss.W.device, group)
            grad_scale = float(world) if self.grad_reduction == "mean" else 1.0
            x, x_replicated = gather_embeddings(embeddings, sizes, group, grad_scale=grad_scale)
            all_labels = gather_rows(labels, sizes, group)
        k = loss.sub_centers
        columns = self._sample(all_labels) if self.training and self.sample_rate < 1.0 else None
        weight = loss.W if columns is None else loss.W.index_select(1, _centre_columns(columns, k))
        local_labels = columns_of_labels(all_labels, self.start, columns, self.local_classes)
        acc = accumulation_dtype(x.dtype, loss.W.dtype)
        return F.fused_margin_loss(
            x,
            weight,
            all_labels,
            local_labels,
            loss.margin_fn,
            loss.scale,
            reduction=loss.reduction,
            backend=loss.backend,
            rows_per_chunk=loss.rows_per_chunk or self._rows_per_chunk(sum(sizes), acc, loss.embedding_size, k),
            validate=loss.validate,
            sub_centers=k,
            num_classes=self.num_classes,
            shard=None if world == 1 else ShardSpec.of(group),
            norm_source=x_replicated,
        )

    def _rows_per_chunk(self, num_rows: int, acc: torch.dtype, embedding_size: int, sub_centers: int) -> int:
        """Rows per chunk, the same on every rank (each chunk all-reduces): sized for the widest shard."""
        widest = self.max_local_classes
        if self.training and self.sample_rate < 1.0:
            widest = min(widest, max(num_sampled_columns(widest, self.sample_rate), num_rows))
        row_bytes = widest * sub_centers * (torch.finfo(acc).bits // 8)
        return chunk_rows(num_rows, row_bytes, row_bytes * embedding_size)

    def _sample(self, all_labels: Tensor) -> Tensor:
        local = all_labels - self.start
        positive = torch.unique(local[(local >= 0) & (local < self.local_classes)])
        columns = sample_columns(
            positive, self.local_classes, self.sample_rate, self.seed, self.sampling_step, self.rank
        )
        self.sampling_step += 1
        self.last_sampled_classes = columns + self.start
        return columns

    def extra_repr(self) -> str:
        return (
            f"classes=[{self.start}, {self.stop}) of {self.num_classes} on rank {self.rank}/{self.world_size}, "
            f"sample_rate={self.sample_rate:g}, grad_reduction={self.grad_reduction!r}"
        )


def _centre_columns(classes: Tensor, sub_centers: int) -> Tensor:
    """The ``W`` columns of ``classes`` (``sub_centers`` per class, contiguous)."""
    if sub_centers == 1:
        return classes
    return (classes[:, None] * sub_centers + torch.arange(sub_centers, device=classes.device)).flatten()
