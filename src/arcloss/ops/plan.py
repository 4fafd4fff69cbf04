"""The typed options of one fused pass: which engine, GEMM dtype, chunking, sub-centres, sharding.

A :class:`Plan` is built once per call by :mod:`arcloss.functional` and travels unchanged to the engine.
Through the ``torch.library`` custom ops it travels as primitive arguments (:meth:`Plan.op_args` and
:meth:`Plan.from_op_args`, the one place that knows the encoding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Plan", "ShardSpec", "accumulation_dtype"]


def accumulation_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float64 if any input is float64, else float32: the dtype of the softmax and margin math."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


@dataclass(frozen=True)
class ShardSpec:
    """This process's part of a class dimension sharded over a process group.

    Each rank holds a contiguous block of classes; every rank sees the same global batch of embeddings. The
    engines all-reduce each row's softmax statistics (max: MAX, rescaled sum of exponentials: SUM) and the
    target cosines (only the owner of a label knows its centre) over ``group_name``.

    Args:
        group_name: name of the process group (``ProcessGroup.group_name``), resolvable in every process.
    """

    group_name: str

    @staticmethod
    def of(group: dist.ProcessGroup | None) -> ShardSpec:
        """The spec of ``group`` (``None``: the default group)."""
        return ShardSpec((group or dist.group.WORLD).group_name)  # type: ignore[union-attr]

    @property
    def group(self) -> dist.ProcessGroup:
        resolve = dist.distributed_c10d._resolve_process_group  # pyright: ignore[reportPrivateImportUsage]
        return resolve(self.group_name)  # pyright: ignore[reportArgumentType]

    def all_reduce_(self, tensor: torch.Tensor, op: dist.ReduceOp.RedOpType) -> torch.Tensor:
        dist.all_reduce(tensor, op=op, group=self.group)
        return tensor

    def reduce_stats(self, row_max: torch.Tensor, row_sum: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global row max and sum of ``exp(z - global_max)`` from this shard's ``(row_max, row_sum)``."""
        global_max = self.all_reduce_(row_max.clone(), dist.ReduceOp.MAX)
        return global_max, self.all_reduce_(row_sum * torch.exp(row_max - global_max), dist.ReduceOp.SUM)


@dataclass(frozen=True)
class Plan:
    """How one fused pass runs.

    Args:
        engine: the registered engine's name (see :mod:`arcloss.ops.registry`), already resolved.
        matmul_dtype: dtype of the GEMMs (the autocast dtype under AMP); ``None``: the accumulation dtype.
        rows_per_chunk: rows per chunk for chunked engines; ``None``: from the memory budget.
        sub_centers: K sub-centres per class: ``W`` is ``(D, C * K)``, class c owning columns ``c*K .. c*K+K-1``.
        shard: the class shard of this process, or ``None`` for a single process holding every class.
    """

    engine: str
    matmul_dtype: torch.dtype | None = None
    rows_per_chunk: int | None = None
    sub_centers: int = 1
    shard: ShardSpec | None = None

    def op_args(self) -> tuple[str, torch.dtype | None, int, int, str]:
        """The plan as the primitive arguments of the custom ops (``0``/``""`` for ``None``)."""
        shard = "" if self.shard is None else self.shard.group_name
        return self.engine, self.matmul_dtype, self.rows_per_chunk or 0, self.sub_centers, shard

    @staticmethod
    def from_op_args(
        engine: str, matmul_dtype: torch.dtype | None, rows_per_chunk: int, sub_centers: int, shard: str
    ) -> Plan:
        return Plan(engine, matmul_dtype, rows_per_chunk or None, sub_centers, ShardSpec(shard) if shard else None)
