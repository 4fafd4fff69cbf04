"""The collectives of a sharded loss outside the engine: rank/world, the input checks every rank agrees on,
and the all-gather of the batch with the two gradient rules it needs."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def rank_world(group: dist.ProcessGroup | None) -> tuple[int, int]:
    """This process's rank and the group's size; ``(0, 1)`` when torch.distributed is not initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        if group is not None:
            raise RuntimeError("a process_group was given but torch.distributed is not initialised")
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def agree_on_inputs(
    n: int, dtype: torch.dtype | None, error: Exception | None, device: torch.device, group: dist.ProcessGroup | None
) -> list[int]:
    """Every rank's local batch size, after every rank has learnt every rank's input problem.

    Each rank passes its batch size, embedding dtype and the error its own checks raised (or ``None``). If
    any rank has an error, or the ranks' float dtypes differ, every rank raises the same error, naming the
    ranks, instead of leaving its peers blocked in the next collective.
    """
    code = -1 if dtype is None else _FLOAT_DTYPES.index(dtype)
    local = torch.tensor([n, error is not None, code], dtype=torch.int64, device=device)
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, local, group=group)
    table = torch.stack(parts).tolist()
    if any(failed for _, failed, _ in table):
        messages: list[object] = [None] * len(table)
        dist.all_gather_object(messages, None if error is None else (type(error).__name__, str(error)), group=group)
        failures = [(rank, m) for rank, m in enumerate(messages) if isinstance(m, tuple)]
        kind = TypeError if all(name == "TypeError" for _, (name, _) in failures) else ValueError
        raise kind("; ".join(f"rank {rank}'s input: {text}" for rank, (_, text) in failures))
    dtypes = {row[2] for row in table if row[0] > 0}
    if len(dtypes) > 1:
        names = ", ".join(f"rank {r}: {_FLOAT_DTYPES[row[2]]}" for r, row in enumerate(table) if row[0] > 0)
        raise TypeError(f"embeddings must have the same dtype on every rank, got {names}")
    return [row[0] for row in table]


class _GatherEmbeddings(torch.autograd.Function):
    """Every rank's rows in rank order, as two outputs of one all-gather; see :func:`gather_embeddings`."""

    @staticmethod
    def forward(ctx, t: Tensor, sizes: list[int], group, grad_scale: float) -> tuple[Tensor, Tensor]:
        rank = dist.get_rank(group)
        ctx.rows = slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))
        ctx.group, ctx.grad_scale = group, grad_scale
        gathered = gather_rows(t, sizes, group)
        return gathered, gathered.clone()

    @staticmethod
    def backward(ctx, grad_summed: Tensor, grad_replicated: Tensor):
        summed = grad_summed.contiguous()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM, group=ctx.group)
        grad = summed[ctx.rows] + grad_replicated[ctx.rows]
        return grad * ctx.grad_scale, None, None, None


def gather_rows(t: Tensor, sizes: list[int], group: dist.ProcessGroup | None) -> Tensor:
    """Concatenate every rank's ``t`` (``(n_r, ...)``, uneven ``n_r`` allowed) in rank order (no gradient)."""
    padded = torch.nn.functional.pad(t, (0, 0) * (t.dim() - 1) + (0, max(sizes) - t.shape[0])).contiguous()
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])


def gather_embeddings(
    t: Tensor, sizes: list[int], group: dist.ProcessGroup | None, *, grad_scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Every rank's embeddings ``(n_r, D)`` in rank order, gathered once and returned twice, for the two
    gradient rules a sharded loss needs. The gradient that returns to this rank's rows is, times ``grad_scale``:

    - through the first output, the sum of every rank's gradient for them -- for what each rank computes from
      its own classes (partial contributions);
    - through the second, this rank's own gradient for them -- for what every rank computes identically
      (replicated work, such as the feature norms a margin reads), which a sum would count ``world`` times.
    """
    if not t.requires_grad:
        gathered = gather_rows(t, sizes, group)
        return gathered, gathered
    return _GatherEmbeddings.apply(t, sizes, group, grad_scale)
