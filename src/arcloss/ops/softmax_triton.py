"""Softmax and logit gradient of one row chunk, in place, as Triton kernels (CUDA, or CPU via the interpreter).

The :class:`~arcloss.ops.chunk_softmax.ChunkSoftmax` contract of :mod:`arcloss.ops.softmax_torch` (the
specification): the chunked engine (:mod:`arcloss.ops.chunked`) fills ``buf`` ``(K, C)`` float32/64 with
``dots[i, j] = xhat_i . W_j``; the logits are ``z[i, j] = dots[i, j] * col_scale[j]`` except the target
column ``labels[i] >= 0``, whose logit is ``target_logit[i]``; ``labels[i] == -1`` means "target not in this
block of classes".

What the kernels fuse
---------------------
Both kernels are in the style of Liger-Kernel's cross-entropy: a program owns a row (or a contiguous range
of column tiles of a row, see below) and loops over its columns in ``BLOCK_SIZE`` tiles, with all math in
the accumulation dtype (float32, or float64 for a float64 ``buf``).

1. :func:`row_stats` (read-only over ``buf``): per tile, load dots and ``col_scale``, form the logits,
   substitute the target logit, and update an online max ``m`` and sum ``d = sum exp(z - m)`` (rescaling
   ``d`` by ``exp(m_old - m_new)`` when the max grows). ``buf`` is left untouched.
2. :func:`logit_grad_` (read and write of ``buf``, in place): per tile, recompute the logits from the dots,
   ``p = exp(z - global_max) / global_sum``, and store ``d loss_i / d dots_ij``: ``p_ij * col_scale_j`` off
   target, ``(p_iy - 1) * target_slope_i`` at the target. The per-row factor is folded in, so it returns
   ``None``. The local statistics are not needed (the logits are recomputed rather than read back as
   ``exp(z - local_max)``).

Expected memory traffic per chunk (design, not measured): the ``K x C`` buffer is read twice and written once
(``row_stats`` 1 read, ``logit_grad_`` 1 read + 1 write), plus ``O(K + C)`` for the vectors. The PyTorch path
makes one pass per elementwise op: ``mul_``, ``amax``, ``sub_``, ``exp_``, ``sum`` in ``row_stats`` and
``mul_`` (two in the sharded case) in ``logit_grad_`` -- about 6 reads and 4 writes of the buffer. On a GPU
this stage is bandwidth bound, so the expected saving is roughly that ratio of bytes moved; the three GEMMs
around it are unchanged.

Parallelism: the grid is ``(K, S)``, ``S`` "column splits" per row, each owning a contiguous range of tiles.
``S = 1`` is the plain one-program-per-row scheme; with few rows and many classes (a chunk of a large-``C``
loss may have only ~100 rows) ``S > 1`` keeps every SM busy. ``row_stats`` then writes ``(K, S)`` partial
``(max, sum)`` pairs, combined on the device as ``M = max_s m_s``, ``sum_s d_s exp(m_s - M)``. The result
is deterministic for a given ``(K, C, dtype, device)``. No autotuning (the interpreter cannot autotune): the
block size is ``next_power_of_2(C)`` capped at 32 KiB per tile, with ``num_warps`` from the tile bytes.

Triton is imported here only; the module is imported lazily by :mod:`arcloss._backends` and raises
``ImportError`` when Triton is missing. Kernels run on CPU tensors only when ``TRITON_INTERPRET=1`` was set
before this module was first imported (``triton.jit`` reads it at decoration time).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor

from .chunk_softmax import ChunkTargets, RowStats
from .triton_support import device_guard, is_interpreted

try:
    import triton
    import triton.language as tl
except ImportError as exc:  # pragma: no cover - exercised only where triton is absent
    raise ImportError("arcloss's Triton backend needs triton: pip install 'arcloss[triton]'") from exc

__all__ = ["LaunchConfig", "launch_config", "logit_grad_", "row_stats"]

MAX_TILE_BYTES = 32 * 1024  # BLOCK_SIZE cap: 8192 float32 or 4096 float64 elements per tile
PROGRAMS_PER_SM = 4  # column splits are added until K * S reaches this many programs per SM
_SUPPORTED = {torch.float32: tl.float32, torch.float64: tl.float64}


@triton.jit
def _row_stats_kernel(
    buf_ptr,
    labels_ptr,
    col_scale_ptr,
    target_logit_ptr,
    max_out_ptr,
    sum_out_ptr,
    n_cols,
    stride_row,
    stride_col,
    tiles_per_prog,
    BLOCK_SIZE: tl.constexpr,
    ACC: tl.constexpr,
):
    """Online max and sum of exponentials over the tiles ``[s * tiles_per_prog, (s + 1) * tiles_per_prog)`` of
    row ``i``, for program ``(i, s)``; writes ``max_out[i * S + s]`` and ``sum_out[i * S + s]``."""
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    n_splits = tl.num_programs(1)
    label = tl.load(labels_ptr + row).to(tl.int32)  # -1 or a column index < n_cols
    t_logit = tl.load(target_logit_ptr + row).to(ACC)
    row_ptr = buf_ptr + row * stride_row
    offsets = tl.arange(0, BLOCK_SIZE)
    m = tl.full([], float("-inf"), ACC)
    d = tl.zeros([], ACC)
    first_col = split * tiles_per_prog * BLOCK_SIZE
    last_col = tl.minimum(first_col + tiles_per_prog * BLOCK_SIZE, n_cols)
    for start in range(first_col, last_col, BLOCK_SIZE):
        cols = start + offsets
        mask = cols < last_col
        x = tl.load(row_ptr + cols * stride_col, mask=mask, other=0.0).to(ACC)
        scale = tl.load(col_scale_ptr + cols, mask=mask, other=0.0).to(ACC)
        z = tl.where(cols == label, t_logit, x * scale)
        z = tl.where(mask, z, float("-inf"))
        m_new = tl.maximum(m, tl.max(z, axis=0))
        d = d * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), axis=0)
        m = m_new
    out = row * n_splits + split
    tl.store(max_out_ptr + out, m)
    tl.store(sum_out_ptr + out, d)


@triton.jit
def _logit_grad_kernel(
    buf_ptr,
    labels_ptr,
    col_scale_ptr,
    target_logit_ptr,
    target_slope_ptr,
    global_max_ptr,
    global_sum_ptr,
    n_cols,
    stride_row,
    stride_col,
    tiles_per_prog,
    BLOCK_SIZE: tl.constexpr,
    ACC: tl.constexpr,
):
    """Overwrite the tiles ``[s * tiles_per_prog, (s + 1) * tiles_per_prog)`` of row ``i`` (dots) with
    ``d loss_i / d dots_ij``, for program ``(i, s)``."""
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    label = tl.load(labels_ptr + row).to(tl.int32)  # -1 or a column index < n_cols
    t_logit = tl.load(target_logit_ptr + row).to(ACC)
    t_slope = tl.load(target_slope_ptr + row).to(ACC)
    g_max = tl.load(global_max_ptr + row).to(ACC)
    inv_sum = 1.0 / tl.load(global_sum_ptr + row).to(ACC)
    row_ptr = buf_ptr + row * stride_row
    offsets = tl.arange(0, BLOCK_SIZE)
    first_col = split * tiles_per_prog * BLOCK_SIZE
    last_col = tl.minimum(first_col + tiles_per_prog * BLOCK_SIZE, n_cols)
    for start in range(first_col, last_col, BLOCK_SIZE):
        cols = start + offsets
        mask = cols < last_col
        ptrs = row_ptr + cols * stride_col
        x = tl.load(ptrs, mask=mask, other=0.0).to(ACC)
        scale = tl.load(col_scale_ptr + cols, mask=mask, other=0.0).to(ACC)
        is_target = cols == label
        z = tl.where(is_target, t_logit, x * scale)
        p = tl.exp(z - g_max) * inv_sum
        grad = tl.where(is_target, (p - 1.0) * t_slope, p * scale)
        tl.store(ptrs, grad.to(buf_ptr.dtype.element_ty), mask=mask)


class LaunchConfig(NamedTuple):
    """Kernel launch parameters for a ``(K, C)`` chunk: grid ``(K, splits)``."""

    block_size: int
    num_warps: int
    tiles_per_prog: int
    splits: int


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def launch_config(
    num_rows: int,
    num_cols: int,
    dtype: torch.dtype,
    device: torch.device,
    *,
    block_size: int | None = None,
    col_splits: int | None = None,
) -> LaunchConfig:
    """Tile size, warps and column splits for a ``(num_rows, num_cols)`` buffer of ``dtype`` on ``device``.

    ``block_size`` (a power of two) and ``col_splits`` override the heuristics (tests use them to exercise
    the multi-tile and multi-split paths at tiny shapes). ``splits`` is reduced so that no program is empty.
    """
    if block_size is None:
        cap = MAX_TILE_BYTES // (torch.finfo(dtype).bits // 8)
        block_size = min(triton.next_power_of_2(max(num_cols, 1)), cap)
    elif block_size < 1 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two, got {block_size}")
    n_tiles = max(1, triton.cdiv(num_cols, block_size))
    if col_splits is None:
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            target_programs = PROGRAMS_PER_SM * _sm_count(index)
            col_splits = max(1, triton.cdiv(target_programs, max(num_rows, 1)))
        else:  # the interpreter runs programs one after another: more of them only cost time
            col_splits = 1
    elif col_splits < 1:
        raise ValueError(f"col_splits must be >= 1, got {col_splits}")
    tiles_per_prog = triton.cdiv(n_tiles, min(col_splits, n_tiles))
    splits = triton.cdiv(n_tiles, tiles_per_prog)
    tile_bytes = block_size * torch.finfo(dtype).bits // 8
    # 4 warps up to 8 KiB tiles, 16 at 32 KiB: 8-16 elements per thread, no register spills (checked
    # offline with cuobjdump -res-usage for sm_90, float32 and float64).
    num_warps = 4 if tile_bytes <= 8192 else 8 if tile_bytes <= 16384 else 16
    return LaunchConfig(block_size, num_warps, tiles_per_prog, splits)


def _check(buf: Tensor, labels: Tensor, vectors: dict[str, Tensor]) -> tl.dtype:
    """Validate shapes, dtypes and devices; return the accumulation dtype of the kernels."""
    if buf.dim() != 2:
        raise ValueError(f"buf must be 2-D (K, C), got shape {tuple(buf.shape)}")
    if buf.dtype not in _SUPPORTED:
        raise TypeError(f"buf must be float32 or float64, got {buf.dtype}")
    k, c = buf.shape
    if c == 0:
        raise ValueError("buf has no columns: the softmax over zero classes is undefined")
    if labels.shape != (k,) or labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"labels must be ({k},) int64/int32, got {tuple(labels.shape)} {labels.dtype}")
    for name, tensor in vectors.items():
        expected = (c,) if name == "col_scale" else (k,)
        if tensor.shape != expected or not tensor.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor of shape {expected}, got {tuple(tensor.shape)}")
    for name, tensor in (("labels", labels), *vectors.items()):
        if tensor.device != buf.device:
            raise ValueError(f"{name} is on {tensor.device} but buf is on {buf.device}")
    if buf.device.type != "cuda" and not is_interpreted(_row_stats_kernel):
        raise RuntimeError(
            f"the Triton kernels were compiled for CUDA but buf is on {buf.device}: set TRITON_INTERPRET=1 "
            "before arcloss.ops.softmax_triton is first imported to run them on CPU tensors"
        )
    return _SUPPORTED[buf.dtype]


def row_stats(
    buf: Tensor,
    col_scale: Tensor,
    targets: ChunkTargets,
    *,
    block_size: int | None = None,
    col_splits: int | None = None,
) -> RowStats:
    """Row max and sum of exponentials of the chunk's logits (one read of ``buf``, left untouched).

    Args:
        buf: ``(K, C)`` float32/64 dot products, any strides (rows are usually contiguous).
        col_scale: ``(C,)`` ``s / |W_j|``, float (read in ``buf``'s dtype).
        targets: ``labels`` ``(K,)`` int64 (or int32) target column of each row in this block, or -1; ``logit``
            ``(K,)`` ``s * phi(cos_iy)``, float (``slope`` is not read here).
        block_size: tile override, see :func:`launch_config`.
        col_splits: column-split override, see :func:`launch_config`.

    Returns:
        ``(row_max, row_sum)``, each ``(K,)`` in ``buf.dtype``: ``max_j z_ij`` and ``sum_j exp(z_ij - row_max_i)``.
    """
    labels, target_logit = targets.labels, targets.logit
    acc = _check(buf, labels, {"col_scale": col_scale, "target_logit": target_logit})
    k, c = buf.shape
    cfg = launch_config(k, c, buf.dtype, buf.device, block_size=block_size, col_splits=col_splits)
    part_max = torch.empty(k, cfg.splits, dtype=buf.dtype, device=buf.device)
    part_sum = torch.empty_like(part_max)
    if k:
        with device_guard(buf.device):
            _row_stats_kernel[(k, cfg.splits)](
                buf,
                labels.contiguous(),
                col_scale.contiguous(),
                target_logit.contiguous(),
                part_max,
                part_sum,
                c,
                buf.stride(0),
                buf.stride(1),
                cfg.tiles_per_prog,
                BLOCK_SIZE=cfg.block_size,
                ACC=acc,
                num_warps=cfg.num_warps,  # pyright: ignore[reportCallIssue]
            )
    if cfg.splits == 1:
        return RowStats(part_max[:, 0], part_sum[:, 0])
    row_max = part_max.amax(dim=1)
    # Every split owns at least one column, so every m_s is finite (for finite inputs) and exp(m_s - M) <= 1.
    row_sum = (part_sum * torch.exp(part_max - row_max[:, None])).sum(dim=1)
    return RowStats(row_max, row_sum)


def logit_grad_(
    buf: Tensor,
    col_scale: Tensor,
    targets: ChunkTargets,
    local: RowStats,
    total: RowStats | None,
    *,
    block_size: int | None = None,
    col_splits: int | None = None,
) -> None:
    """Overwrite ``buf`` (dots, as :func:`row_stats` left it) with ``d loss_i / d dots_ij`` (one read, one write).

    ``loss_i = log(sum_j exp(z_ij)) - target_logit_i`` with the sum over all classes (all shards), so with
    ``p_ij = exp(z_ij - M_i) / S_i`` (``(M, S)`` the total statistics): ``d loss_i / d dots_ij =
    p_ij * col_scale_j`` for ``j != y_i`` and ``(p_iy - 1) * target_slope_i`` at the target.

    Args:
        buf: ``(K, C)`` float32/64 dot products, overwritten in place.
        col_scale: as for :func:`row_stats`.
        targets: as for :func:`row_stats`, and ``slope`` ``(K,)``: the derivative of the target logit in the
            target entry of ``buf``.
        local: what :func:`row_stats` returned; unused (the logits are recomputed from the dots).
        total: row max and sum of exponentials over *all* classes, or ``None`` when ``local`` is.
        block_size: tile override, see :func:`launch_config`.
        col_splits: column-split override, see :func:`launch_config`.

    Returns:
        ``None``: the row factor is folded into ``buf``.
    """
    stats = local if total is None else total
    global_max, global_sum = stats.max, stats.sum
    labels, target_logit, target_slope = targets
    vectors = {
        "col_scale": col_scale,
        "target_logit": target_logit,
        "target_slope": target_slope,
        "global_max": global_max,
        "global_sum": global_sum,
    }
    acc = _check(buf, labels, vectors)
    k, c = buf.shape
    if k == 0:
        return None
    cfg = launch_config(k, c, buf.dtype, buf.device, block_size=block_size, col_splits=col_splits)
    with device_guard(buf.device):
        _logit_grad_kernel[(k, cfg.splits)](
            buf,
            labels.contiguous(),
            col_scale.contiguous(),
            target_logit.contiguous(),
            target_slope.contiguous(),
            global_max.contiguous(),
            global_sum.contiguous(),
            c,
            buf.stride(0),
            buf.stride(1),
            cfg.tiles_per_prog,
            BLOCK_SIZE=cfg.block_size,
            ACC=acc,
            num_warps=cfg.num_warps,  # pyright: ignore[reportCallIssue]
        )
    return None
