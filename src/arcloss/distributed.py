"""Angular-margin losses with the class centres sharded over ``torch.distributed`` ranks (model parallel).

Each rank of the process group owns a contiguous slice of classes, ``W`` of shape
``(embedding_size, local_classes)``; ``class_range`` gives the split (the first ``C % world`` ranks hold one
class more). A forward:

1. all-gathers every rank's embeddings with ``torch.distributed.nn.functional.all_gather`` (whose backward
   sums each rank's gradient contributions back to the rank that produced the rows) and the labels;
2. runs the fused chunked pass of :func:`arcloss._fused.margin_ce_chunks` over the global batch against the
   local columns, all-reducing each chunk's row max (MAX) and rescaled sum of exponentials (SUM), so the
   softmax is over all classes of all shards and nothing of size ``N x C`` exists;
3. combines the per-row losses: the target logit is only known on the rank that owns the label, so each
   row's loss is taken from its owner (zero elsewhere, one SUM all-reduce).

Gradient convention (``grad_reduction``): the loss returned on every rank is the *global* loss (the same
value everywhere: mean or sum over the global batch). ``W.grad`` on each rank is exactly the single-process
gradient of that loss for the rank's classes. For the embeddings, DistributedDataParallel *averages* the
backbone gradients over ranks, so with ``grad_reduction="mean"`` (default) each rank's ``embeddings.grad``
is ``world_size`` times the single-process gradient for its rows, and after DDP's averaging the backbone
gradient equals single-process training on the global batch. With ``grad_reduction="sum"``
``embeddings.grad`` is exactly the single-process gradient (for backbones whose gradients are summed across
ranks, or not reduced). Keep the loss module itself out of DDP: its ``W`` differs per rank.

Every rank must call forward and backward for every step (they run collectives), with any local batch size,
0 included. Without an initialised process group the module runs as a single process (world size 1).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor, nn

from . import _backends
from ._fused import accumulation_dtype, chunk_rows, margin_ce_chunks
from ._partial_fc import columns_of_labels, mix_seed, num_sampled_columns, sample_columns
from ._validation import check_angle_degrees, check_choice, check_cosine_margin, check_real, check_scale, check_size
from .losses import ArcFaceLoss, CombinedMarginLoss, CosFaceLoss, _MarginLoss
from .margins import AngularMargin

__all__ = [
    "ShardedArcFaceLoss",
    "ShardedCombinedMarginLoss",
    "ShardedCosFaceLoss",
    "ShardedMarginLoss",
    "class_range",
    "gather_full_weight",
    "load_full_weight_",
    "shard_full_weight",
    "to_single_process",
]

_INIT_BLOCK = 4096  # classes per independently seeded block of the default initialisation
_PROBLEMS = {
    1: "labels must be in [0, num_classes={num_classes}) (rank {rank}'s batch)",
    2: "embeddings contain NaN or Inf (rank {rank}'s batch)",
}


def class_range(num_classes: int, world_size: int, rank: int) -> tuple[int, int]:
    """The global classes ``[start, stop)`` of ``rank``: contiguous, the first ``C % world`` ranks one more."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def _rank_world(group: dist.ProcessGroup | None) -> tuple[int, int]:
    if not (dist.is_available() and dist.is_initialized()):
        if group is not None:
            raise RuntimeError("a process_group was given but torch.distributed is not initialised")
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def _gather_sizes(
    n: int, problem: int, device: torch.device, group: dist.ProcessGroup | None, world: int
) -> tuple[list[int], list[int]]:
    """Every rank's local batch size and input-problem code (0: none), in rank order."""
    local = torch.tensor([n, problem], dtype=torch.int64, device=device)
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local, group=group)
    return [int(p[0]) for p in parts], [int(p[1]) for p in parts]


def _pad_rows(t: Tensor, rows: int) -> Tensor:
    return torch.nn.functional.pad(t, (0, 0) * (t.dim() - 1) + (0, rows - t.shape[0]))


def _all_gather_rows(t: Tensor, sizes: list[int], group: dist.ProcessGroup | None, *, autograd: bool) -> Tensor:
    """Concatenate every rank's ``t`` (``(n_r, ...)``, uneven ``n_r``) in rank order.

    With ``autograd`` the gather is ``torch.distributed.nn.functional.all_gather``: the gradient of the
    result returns to each rank's rows summed over all ranks' contributions.
    """
    padded = _pad_rows(t, max(sizes))
    if autograd:
        with warnings.catch_warnings():  # deprecated for torch.compile's functional collectives; still exact
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*all_gather is deprecated")
            parts = dist_fn.all_gather(padded, group=group)
    else:
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous(), group=group)
    return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])


def _stats_reducer(group: dist.ProcessGroup | None):
    """``reduce_stats`` for :func:`margin_ce_chunks`: global row max and sum of ``exp(z - global_max)``."""

    def reduce(row_max: Tensor, row_sum: Tensor) -> tuple[Tensor, Tensor]:
        global_max = row_max.clone()
        dist.all_reduce(global_max, op=dist.ReduceOp.MAX, group=group)
        global_sum = row_sum * torch.exp(row_max - global_max)
        dist.all_reduce(global_sum, op=dist.ReduceOp.SUM, group=group)
        return global_max, global_sum

    return reduce


class _ShardedMarginCE(torch.autograd.Function):
    """Global margin cross-entropy of all ranks' embeddings against this rank's (sampled) columns.

    Inputs: ``x`` ``(N, D)`` global embeddings, ``weight`` ``(D, C_local)``, ``columns`` ``(K,)`` sampled
    local columns or ``None``, ``labels`` ``(N,)`` target column among the used ones or -1. Output: the
    scalar global loss. Gradients are computed in the forward (row weights are known) and only scaled in
    the backward; the dense ``W`` gradient of a sampled step is zero outside ``columns``.
    """

    @staticmethod
    def forward(ctx, x, weight, columns, labels, margin, scale, reduction, x_grad_scale, group, world, options):
        matmul_dtype, rows_per_chunk, softmax = options
        n = x.shape[0]
        acc = accumulation_dtype(x.dtype, weight.dtype)
        row_weight = x.new_full((n,), 1.0 / n if reduction == "mean" else 1.0, dtype=acc)
        used = weight if columns is None else weight.index_select(1, columns)
        want_x, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        loss, grad_x, grad_w = margin_ce_chunks(
            x,
            used,
            labels,
            row_weight,
            margin,
            scale,
            want_grad_x=want_x,
            want_grad_w=want_w,
            matmul_dtype=matmul_dtype,
            rows_per_chunk=rows_per_chunk,
            softmax=softmax,
            reduce_stats=None if world == 1 else _stats_reducer(group),
        )
        del used
        row_loss = torch.where(labels >= 0, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
        if world > 1:
            dist.all_reduce(row_loss, op=dist.ReduceOp.SUM, group=group)
        if grad_x is not None and x_grad_scale != 1.0:
            grad_x.mul_(x_grad_scale)
        ctx.want = (want_x, want_w)
        ctx.columns = columns
        ctx.weight_shape = weight.shape
        ctx.save_for_backward(grad_x, grad_w)
        return (row_loss * row_weight).sum()

    @staticmethod
    def backward(ctx, grad_out):
        grad_x, grad_w = ctx.saved_tensors
        want_x, want_w = ctx.want
        # In place, as the single-process loss: no second W-sized buffer (and a second backward through the
        # same graph raises on the version counters instead of double-scaling); skipped for a unit grad_out.
        unit = grad_out.device.type == "cpu" and not torch.compiler.is_compiling() and float(grad_out) == 1.0
        if want_x and not unit:
            grad_x.mul_(grad_out)
        if want_w:
            if not unit:
                grad_w.mul_(grad_out)
            if ctx.columns is not None:
                dense = grad_w.new_zeros(ctx.weight_shape)
                grad_w = dense.index_copy_(1, ctx.columns, grad_w)
        return (grad_x if want_x else None, grad_w if want_w else None) + (None,) * 9


class ShardedMarginLoss(nn.Module):
    """Margin softmax cross-entropy over ``num_classes`` classes whose centres are sharded over ranks.

    Args:
        num_classes: global number of classes C (>= world size).
        embedding_size: embedding width D.
        margin: the target-logit margin (radians inside :class:`AngularMargin`).
        scale: logit scale ``s`` (> 0).
        process_group: the ranks that share the classes (default: the world group; none initialised: 1 rank).
        sample_rate: PartialFC fraction of each shard's classes used per training step, in ``(0, 1]``.
        seed: seeds the default initialisation and the class sampling (use the same value on every rank).
        reduction: ``"mean"`` | ``"sum"`` over the global batch.
        grad_reduction: how the backbone gradients are reduced across ranks, ``"mean"`` (DDP) | ``"sum"``;
            see the module docstring.
        backend, validate, rows_per_chunk: as :class:`arcloss.ArcFaceLoss`.
        weight_init_func: called on the local ``W``; default N(0, 1) drawn per block of global classes from
            ``seed``, so the assembled full ``W`` does not depend on the number of ranks.
        device, dtype: of ``W``.

    Attributes:
        W: ``(embedding_size, local_classes)`` this rank's class centres, global classes ``[start, stop)``.
        last_sampled_classes: ``(K,)`` global classes used by the last sampled step on this rank, or None.
    """

    W: Tensor

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: AngularMargin,
        scale: float,
        *,
        process_group: dist.ProcessGroup | None = None,
        sample_rate: float = 1.0,
        seed: int = 0,
        reduction: str = "mean",
        grad_reduction: str = "mean",
        backend: str = "auto",
        validate: bool = True,
        rows_per_chunk: int | None = None,
        weight_init_func=None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(margin, AngularMargin):
            raise TypeError(f"margin must be an AngularMargin, got {type(margin).__name__}")
        self.num_classes = check_size("num_classes", num_classes)
        self.embedding_size = check_size("embedding_size", embedding_size)
        self.margin_spec = margin
        self.scale = check_scale(scale)
        self.sample_rate = check_real("sample_rate", sample_rate)
        if not 0.0 < self.sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
        self.seed = int(seed)
        self.reduction = check_choice("reduction", reduction, ("mean", "sum"))
        self.grad_reduction = check_choice("grad_reduction", grad_reduction, ("mean", "sum"))
        self.backend = check_choice("backend", backend, _backends.BACKENDS)
        self.validate = bool(validate)
        self.rows_per_chunk = rows_per_chunk
        self.process_group = process_group
        self.rank, self.world_size = _rank_world(process_group)
        if self.num_classes < self.world_size:
            raise ValueError(f"num_classes={num_classes} must be >= the world size {self.world_size}")
        self.start, self.stop = class_range(self.num_classes, self.world_size, self.rank)
        self.max_local_classes = math.ceil(self.num_classes / self.world_size)
        self.weight_init_func = weight_init_func
        self.sampling_step = 0
        self.last_sampled_classes: Tensor | None = None
        self.W = nn.Parameter(torch.empty(self.embedding_size, self.local_classes, device=device, dtype=dtype))
        self.reset_parameters()

    @property
    def local_classes(self) -> int:
        return self.stop - self.start

    def reset_parameters(self) -> None:
        """N(0, 1) per entry from ``seed`` (blocks of global classes; independent of the world size)."""
        with torch.no_grad():
            if self.weight_init_func is not None:
                self.weight_init_func(self.W)
                return
            for block in range(self.start // _INIT_BLOCK, (self.stop - 1) // _INIT_BLOCK + 1):
                lo = block * _INIT_BLOCK
                generator = torch.Generator().manual_seed(mix_seed(self.seed, block))
                values = torch.randn(self.embedding_size, _INIT_BLOCK, generator=generator)
                keep = slice(max(self.start, lo), min(self.stop, lo + _INIT_BLOCK))
                self.W[:, keep.start - self.start : keep.stop - self.start].copy_(
                    values[:, keep.start - lo : keep.stop - lo]
                )

    def get_extra_state(self) -> dict:
        """Saved with the shard: its place in the global classes and the sampling step (for resuming)."""
        return {
            "num_classes": self.num_classes,
            "start": self.start,
            "stop": self.stop,
            "sampling_step": self.sampling_step,
        }

    def set_extra_state(self, state: dict) -> None:
        saved = (state["num_classes"], state["start"], state["stop"])
        if saved != (self.num_classes, self.start, self.stop):
            raise ValueError(
                f"this shard holds classes [{self.start}, {self.stop}) of {self.num_classes}, the checkpoint "
                f"[{saved[1]}, {saved[2]}) of {saved[0]}: reshard through gather_full_weight/load_full_weight_"
            )
        self.sampling_step = int(state["sampling_step"])

    def _check(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        if not isinstance(embeddings, Tensor) or not embeddings.is_floating_point() or embeddings.dim() != 2:
            raise TypeError("embeddings must be a 2-D floating-point tensor (batch, embedding_size)")
        if embeddings.shape[1] != self.embedding_size:
            raise ValueError(f"embeddings have width {embeddings.shape[1]}, expected {self.embedding_size}")
        if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.dim() != 1:
            raise TypeError("labels must be a 1-D integer tensor of global class indices")
        if labels.shape[0] != embeddings.shape[0]:
            raise ValueError(f"batch sizes differ: {embeddings.shape[0]} embeddings, {labels.shape[0]} labels")
        return labels.to(device=embeddings.device, dtype=torch.int64)

    def _value_problem(self, embeddings: Tensor, labels: Tensor) -> int:
        """0, or the key in ``_PROBLEMS`` of what is wrong with this rank's values (one device sync)."""
        if not self.validate or labels.numel() == 0:
            return 0
        if int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
            return 1
        return 0 if bool(torch.isfinite(embeddings).all()) else 2

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Global loss of every rank's batch; this rank passes its ``(n, D)`` embeddings and ``(n,)`` labels.

        Returns the scalar loss over the global batch (the same on every rank): float32 for float32/16
        inputs, float64 for float64 ones. Every rank must call it, ``n`` may differ per rank and be 0.
        """
        labels = self._check(embeddings, labels)
        group, world = self.process_group, self.world_size
        problem = self._value_problem(embeddings, labels)
        if world > 1:  # every rank learns every rank's problem and raises, rather than leaving peers waiting
            sizes, problems = _gather_sizes(embeddings.shape[0], problem, embeddings.device, group, world)
        else:
            sizes, problems = [embeddings.shape[0]], [problem]
        for rank, code in enumerate(problems):
            if code:
                raise ValueError(_PROBLEMS[code].format(num_classes=self.num_classes, rank=rank))
        if world > 1:
            x = _all_gather_rows(embeddings, sizes, group, autograd=True)
            all_labels = _all_gather_rows(labels, sizes, group, autograd=False)
        else:
            x, all_labels = embeddings, labels
        acc = accumulation_dtype(embeddings.dtype, self.W.dtype)
        if sum(sizes) == 0:  # a finite zero still connected to both inputs, as the single-process loss
            return (embeddings.sum() + self.W[:0].sum()).to(acc)
        columns = self._sample(all_labels) if self.training and self.sample_rate < 1.0 else None
        local_labels = columns_of_labels(all_labels, self.start, columns, self.local_classes)
        rows = self.rows_per_chunk or self._rows_per_chunk(x.shape[0], acc)
        autocast = torch.is_autocast_enabled(x.device.type)
        matmul_dtype = torch.get_autocast_dtype(x.device.type) if autocast else None
        if matmul_dtype is None and x.dtype == self.W.dtype and x.dtype in (torch.float16, torch.bfloat16):
            matmul_dtype = x.dtype
        softmax = _backends.softmax_module(_backends.resolve(self.backend, x.device))
        x_grad_scale = float(world) if self.grad_reduction == "mean" else 1.0
        with torch.autocast(x.device.type, enabled=False):
            return _ShardedMarginCE.apply(
                x,
                self.W,
                columns,
                local_labels,
                self.margin_spec,
                self.scale,
                self.reduction,
                x_grad_scale,
                group,
                world,
                (matmul_dtype, rows, softmax),
            )

    def _rows_per_chunk(self, num_rows: int, acc: torch.dtype) -> int:
        """Rows per chunk, the same on every rank (each chunk all-reduces): sized for the widest shard."""
        widest = self.max_local_classes
        if self.training and self.sample_rate < 1.0:
            widest = min(widest, max(num_sampled_columns(widest, self.sample_rate), num_rows))
        acc_bytes = torch.finfo(acc).bits // 8
        return chunk_rows(num_rows, widest * acc_bytes, widest * self.embedding_size * acc_bytes)

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
            f"num_classes={self.num_classes}, classes=[{self.start}, {self.stop}) on rank {self.rank}/"
            f"{self.world_size}, embedding_size={self.embedding_size}, {self._margin_repr()}, "
            f"scale={self.scale:g}, sample_rate={self.sample_rate:g}, reduction={self.reduction!r}"
        )

    def _margin_repr(self) -> str:
        m = self.margin_spec
        return f"margin=AngularMargin(m1={m.m1:g}, m2={m.m2:g}rad, m3={m.m3:g}, easy_margin={m.easy_margin})"

    def _single_process(self) -> _MarginLoss:
        m = self.margin_spec
        return CombinedMarginLoss(
            self.num_classes,
            self.embedding_size,
            m1=m.m1,
            m2=math.degrees(m.m2),
            m3=m.m3,
            scale=self.scale,
            easy_margin=m.easy_margin,
            reduction=self.reduction,
            backend=self.backend,
            weight_init_func=_no_init,
        )


def _no_init(weight: Tensor) -> None:
    """Leave ``weight`` uninitialised (it is about to be overwritten by a gathered full ``W``)."""


class ShardedArcFaceLoss(ShardedMarginLoss):
    """Sharded :class:`arcloss.ArcFaceLoss`: ``margin`` in **degrees**; other arguments as ShardedMarginLoss."""

    def __init__(self, num_classes: int, embedding_size: int, margin: float = 28.6, scale: float = 64, **kwargs):
        self.margin = check_angle_degrees("margin", margin)
        super().__init__(num_classes, embedding_size, AngularMargin(m2=math.radians(self.margin)), scale, **kwargs)

    def _margin_repr(self) -> str:
        return f"margin={self.margin:g}deg"

    def _single_process(self) -> _MarginLoss:
        return ArcFaceLoss(
            self.num_classes,
            self.embedding_size,
            self.margin,
            self.scale,
            reduction=self.reduction,
            backend=self.backend,
            weight_init_func=_no_init,
        )


class ShardedCosFaceLoss(ShardedMarginLoss):
    """Sharded :class:`arcloss.CosFaceLoss`: ``margin`` a cosine margin (>= 0)."""

    def __init__(self, num_classes: int, embedding_size: int, margin: float = 0.35, scale: float = 64, **kwargs):
        self.margin = check_cosine_margin("margin", margin)
        super().__init__(num_classes, embedding_size, AngularMargin(m3=self.margin), scale, **kwargs)

    def _margin_repr(self) -> str:
        return f"margin={self.margin:g}"

    def _single_process(self) -> _MarginLoss:
        return CosFaceLoss(
            self.num_classes,
            self.embedding_size,
            self.margin,
            self.scale,
            reduction=self.reduction,
            backend=self.backend,
            weight_init_func=_no_init,
        )


class ShardedCombinedMarginLoss(ShardedMarginLoss):
    """Sharded :class:`arcloss.CombinedMarginLoss`: ``m2`` in **degrees**, ``m1``, ``m3`` dimensionless."""

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        m1: float = 1.0,
        m2: float = 28.6,
        m3: float = 0.0,
        scale: float = 64,
        easy_margin: bool = False,
        **kwargs,
    ):
        margin = AngularMargin(
            check_real("m1", m1), math.radians(check_angle_degrees("m2", m2)), check_real("m3", m3), bool(easy_margin)
        )
        super().__init__(num_classes, embedding_size, margin, scale, **kwargs)


# --- checkpoints -------------------------------------------------------------------------------------------


def gather_full_weight(loss: ShardedMarginLoss, dst: int | None = 0) -> Tensor | None:
    """The full ``(embedding_size, num_classes)`` ``W`` assembled from every rank's shard.

    A collective: every rank of ``loss.process_group`` must call it. Returns the tensor on rank ``dst`` (a
    rank of the group) and ``None`` elsewhere; with ``dst=None`` every rank gets it. Shards travel one at a
    time, so the peak extra memory on a receiving rank is the full ``W`` plus one shard.
    """
    w = loss.W.detach()
    if loss.world_size == 1:
        return w.clone()
    full = None
    if dst is None or loss.rank == dst:
        full = torch.empty(loss.embedding_size, loss.num_classes, dtype=w.dtype, device=w.device)
    group = loss.process_group
    for rank in range(loss.world_size):
        start, stop = class_range(loss.num_classes, loss.world_size, rank)
        if rank == loss.rank:
            if full is not None:
                full[:, start:stop].copy_(w)
            if dst is None:
                dist.broadcast(w.contiguous(), _global_rank(group, rank), group=group)
            elif rank != dst:
                dist.send(w.contiguous(), _global_rank(group, dst), group=group)
            continue
        if dst is None or loss.rank == dst:
            shard = torch.empty(loss.embedding_size, stop - start, dtype=w.dtype, device=w.device)
            if dst is None:
                dist.broadcast(shard, _global_rank(group, rank), group=group)
            else:
                dist.recv(shard, _global_rank(group, rank), group=group)
            full[:, start:stop].copy_(shard)
    return full


def _global_rank(group: dist.ProcessGroup | None, rank: int) -> int:
    return rank if group is None else dist.get_global_rank(group, rank)


def shard_full_weight(full: Tensor, num_ranks: int, rank: int) -> Tensor:
    """This rank's ``(D, local_classes)`` slice (a copy) of a full ``(D, C)`` ``W``, as :func:`class_range`."""
    start, stop = class_range(full.shape[1], num_ranks, rank)
    return full[:, start:stop].clone()


def load_full_weight_(loss: ShardedMarginLoss, full: Tensor) -> ShardedMarginLoss:
    """Copy this rank's slice of a full ``(embedding_size, num_classes)`` ``W`` (e.g. a plain ArcFaceLoss's)
    into ``loss.W``, in place. Not a collective: each rank reads the full tensor (e.g. ``torch.load(...,
    mmap=True)``)."""
    if tuple(full.shape) != (loss.embedding_size, loss.num_classes):
        raise ValueError(f"expected a ({loss.embedding_size}, {loss.num_classes}) W, got {tuple(full.shape)}")
    with torch.no_grad():
        loss.W.copy_(full[:, loss.start : loss.stop])
    return loss


def to_single_process(loss: ShardedMarginLoss, dst: int | None = 0) -> _MarginLoss | None:
    """A plain :class:`arcloss.ArcFaceLoss` (``CosFaceLoss``, ``CombinedMarginLoss``) with the full ``W``.

    A collective like :func:`gather_full_weight`; returns the module on ``dst`` and ``None`` elsewhere.
    """
    full = gather_full_weight(loss, dst)
    if full is None:
        return None
    single = loss._single_process().to(device=full.device, dtype=full.dtype)
    with torch.no_grad():
        single.W.copy_(full)
    return single
