"""Whole-pass fused margin-softmax cross-entropy in Triton: no ``N x C`` tensor, gradients by recomputation.

Shapes: ``x`` ``(N, D)`` embeddings, ``weight`` ``(D, C)`` class centres (pytorch-metric-learning's layout),
both *not* normalised. With ``a_i = 1 / max(|x_i|, eps)``, ``b_j = 1 / max(|W_j|, eps)`` and the raw dot
``u_ij = x_i . W_j``, the cosine is ``cos_ij = u_ij a_i b_j``, the logits are ``z_ij = s cos_ij`` except the
target column ``z_iy = t_i`` (given, already scaled), and ``loss_i = logsumexp_j z_ij - t_i``.

Gradients (``L = sum_i row_weight_i loss_i``), with ``g_ij = dL / dcos_ij``:

- ``g_ij = rw_i p_ij s`` off target, ``g_iy = rw_i (p_iy - 1) target_slope_i`` at the target;
- ``dL/dx_i = a_i (B_i - r_i a_i x_i)`` with ``B_i = sum_j g_ij b_j W_j`` and ``r_i = sum_j g_ij cos_ij``;
- ``dL/dW_j = b_j (A_j - c_j b_j W_j)`` with ``A_j = sum_i g_ij a_i x_i`` and ``c_j = sum_i g_ij cos_ij``;
- ``dL/dt_i = rw_i (p_iy - 1)``.

The projection coefficients ``r`` and ``c`` (the normalisations' share of the gradient) are accumulated in the
same tiles as ``B`` and ``A``, so no second pass over ``W`` or ``grad_w`` is needed.

Layout and tiling
-----------------
Tiles are ``BLOCK_M`` rows x ``BLOCK_N`` classes. The raw dot ``u`` of a tile runs over ``D`` in ``BLOCK_K``
chunks with ``tl.dot`` in ``matmul_dtype`` (float32/float64 as IEEE, never TF32) into a float32 accumulator
(float64 for float64 dots). ``W`` is read in its own dtype (float32 under autocast) and cast to the dot dtype
in registers: there is no reduced-precision copy of ``W`` in memory. ``x`` is small (``N x D``), so it is
prepared once: its inverse norms, and a contiguous copy in the dot dtype when it is not already in it. The
inverse column norms ``b`` are computed by the stats pass from the un-cast ``W`` tiles it loads anyway (the row
tile 0 programs store them, ``(C,)``), so there is no norm pass over ``W``. All softmax and margin math is in
the accumulation dtype (float64 if ``x`` or ``weight`` is float64, else float32).

Kernels, in launch order (``S`` = class splits, see below):

1. ``_prep_x_kernel``, grid ``(N / 16,)``: ``a`` ``(N,)`` and, if ``x.dtype != matmul_dtype``, the copy of ``x``.
2. ``_stats_kernel``, grid ``(row tiles, S)``: program ``(m, s)`` owns a row tile and a contiguous range of
   class tiles (split ``s``), keeps an online row max / sum of ``exp`` in registers, writes ``(S, N)`` partial
   ``(max, sum)`` and ``b``. The row-tile axis is the fastest grid axis, so the ``N / BLOCK_M`` programs that
   stream the same ``W`` tiles are resident together and ``W`` comes from HBM about once (the rest hits L2).
3. ``_combine_kernel``, grid ``(N / 1024,)``: ``M = max_s m_s``, ``sum_s d_s exp(m_s - M)``; single process: also
   ``loss`` and ``grad_target``. Sharded: the caller's ``reduce_stats`` all-reduces ``(M, sum)``, then
   ``_loss_kernel`` (same grid) writes ``loss`` and ``grad_target`` from the global statistics.
4. ``_grad_w_kernel``, grid ``(C / BLOCK_N, D / BLOCK_D)``: a program owns a class tile (and a chunk of ``D``),
   loops over *all* row tiles recomputing the logit tile, and accumulates ``A`` ``(BLOCK_D, BLOCK_N)`` and
   ``c`` in registers; the epilogue applies the projection and writes ``grad_w`` once, in ``weight.dtype``.
   No atomics, deterministic. ``x`` (in the dot dtype, 1 MiB at N = 1024, D = 512, bf16) is re-read from L2.
5. ``_grad_x_kernel``, grid ``(row tiles, S, D / BLOCK_D)``: a program owns a row tile and a split, loops over
   the split's class tiles recomputing logits, accumulates ``B`` ``(BLOCK_M, BLOCK_D)`` and ``r``, and writes
   them as ``(S, N, D)`` and ``(S, N)`` partials.
6. ``_finish_grad_x_kernel``, grid ``(N / 16,)``: sums the partials, projects through ``x``'s normalisation
   (with the original ``x``, not its reduced-precision copy) and writes ``grad_x`` in ``x.dtype``.

Launches per call: 6 (both gradients, single process), 7 sharded, 3 for the loss only, fewer gradients fewer
launches; no PyTorch compute op (only allocations); ``reduce_stats`` adds whatever the all-reduce launches.

Splits and tiles (:func:`cuda_tiles`): ``S`` is chosen for ``PROGRAMS_PER_SM`` programs per SM over the row
tiles, at most one per class tile, so small batches still fill the GPU. 8 warps; 64 x 64 tiles for 2-byte dots
with ``D <= 128``, 32 x 32 otherwise, ``BLOCK_K = 32``, ``BLOCK_D`` up to ``MAX_BLOCK_D`` (512 for 2-byte
dots). These are the largest that build for sm_90 without register spills: the accumulators span all of
``D``, so e.g. ``64 x 64`` at ``D = 512`` spills ~700 bytes per thread in both gradient kernels. Registers per
thread from ahead-of-time builds (``cuobjdump -res-usage``; bf16 dots, D = 512): stats 80, grad_w 226,
grad_x 248; D = 128 with 64 x 64 tiles: 100, 182, 196; float32 (IEEE, ``BLOCK_D`` 256): 64, 156, 182.
Untuned otherwise (no GPU was available): autotune ``BLOCK_K``, ``num_stages`` and separate stats tiles
(the stats kernel has register room for 128 x 64) on an H100 first.

What is recomputed, memory, cost
--------------------------------
The logit tile is computed three times: in the stats pass and in each gradient pass (``D / BLOCK_D`` times in a
gradient pass when ``D > BLOCK_D``: 2 at D = 1024). Memory beyond the outputs: ``a``, ``b``, ``(S, N)``
statistics, the ``N x D`` dot-dtype copy of ``x`` and the ``(S, N, D)`` partials of ``B`` in the accumulation
dtype, ``S N <= 4 SMs x BLOCK_M`` when ``S > 1`` (35 MB on an H100 at D = 512). No ``N x C`` tensor, no
reduced-precision copy of ``W`` and no ``(D, C)`` scratch: ``grad_w`` is accumulated in registers and written
once, so the extra memory is ``O((N + C) D)`` small terms, well under the ``D x C`` budget.

Expected cost (design estimates, not measurements), with ``F = 2 N C D``: ``5 F`` FLOPs (``F`` for the stats,
``2 F`` per gradient pass) against ``3 F`` for ``nn.Linear`` + cross-entropy (three GEMMs); HBM bytes: ``W``
read three times in its own dtype and ``grad_w`` written once, everything else ``O((N + C) D)``, against the
plain path's ``N x C`` logits written and re-read several times plus a bf16 copy of ``W``. For one GPU at
N = 1024, D = 512, C = 10^6, bf16 dots on an H100 (3.35 TB/s): ``5 F = 5.4`` TFLOP, ~12 ms at a Triton-
realistic 450 TFLOP/s, and 8 GB of HBM traffic, 2.5 ms: compute bound, so ~1.5x the plain path's ~8 ms (3.2
TFLOP of cuBLAS GEMMs plus ~8 GB of logits traffic), with 4 GB of logits never allocated. At N = 128 both are
bound by reading ``W`` (~2.5 ms each): parity. Arithmetic intensity of a gradient pass against L2 is about
``2 BLOCK_N`` FLOP per byte of re-read ``x`` (64 at 32-wide tiles), which is what the small tiles cost.
Reaching plain speed at large ``N`` needs larger, autotuned tiles first. The two gradient passes cannot share
one recomputation cheaply: ``grad_w`` is summed over rows (class-owner programs, ``W`` read once) and
``grad_x`` over classes (row-owner programs); feeding ``grad_x`` from the class-owner pass would need an
``N x D`` partial (or atomics) per class tile, ``C / BLOCK_N`` of them, far more traffic than the ``F`` saved.

Not supported (the caller should route elsewhere): sub-centres (a class's cosine as a max over centres);
labels outside ``[-1, C)`` (not checked on the device: such a row silently has no target column); ``C == 0``;
``x``/``weight`` on different devices or not float16/bfloat16/float32/float64; labels not int64 or the row
vectors not in the accumulation dtype (refused); CPU tensors unless ``TRITON_INTERPRET=1`` was set before this
module was imported. The bfloat16 dot path is checked by an sm_90 build, not numerically: the interpreter's
``tl.dot`` does not emulate bfloat16 (the float16 path, structurally identical, is checked numerically).

Labels ``-1`` (sharded): a row's statistics on a shard include ``exp(t_i - m)`` only where ``labels_i >= 0``,
so the owning shard contributes the target exactly once to the all-reduced sum. ``grad_target`` is computed
from the global statistics as ``rw_i (exp(t_i - M_i) / S_i - 1)`` for every row, the same on every shard. In
a single process a ``-1`` row has no target column at all: its loss is ``logsumexp`` over the non-target
columns minus ``t_i`` (as in :mod:`arcloss.ops.chunked`), and ``grad_target`` is still the formula above (the
value the owner would see), not ``-rw_i``; it may overflow there when ``t_i`` exceeds every logit by ~88. On
any shard, a ``-1`` row's ``t_i`` enters only its ``loss_i`` and ``grad_target_i``, never ``grad_x`` or
``grad_w``. (A sharded loss in arcloss gives every rank every row's target logit, so every rank computes the
same, global loss.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError as exc:  # pragma: no cover - exercised only where triton is absent
    raise ImportError("arcloss's Triton whole-pass engine needs triton: pip install 'arcloss[triton]'") from exc

from .triton_support import device_guard, is_interpreted

__all__ = ["Tiles", "choose_tiles", "cuda_tiles", "whole_pass_margin_ce"]

NORM_EPS = 1e-12  # as torch.nn.functional.normalize
PROGRAMS_PER_SM = 4
# Largest D extent of a gradient accumulator in registers, by dot operand dtype; beyond it the gradient kernels
# get a grid axis over chunks of D (and recompute the logits once per chunk).
MAX_BLOCK_D = {torch.float16: 512, torch.bfloat16: 512, torch.float32: 256, torch.float64: 128}
_ROWS_PER_VECTOR_PROGRAM = 1024
_FINISH_ROWS = 16
_TL_DTYPES = {
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
    torch.float32: tl.float32,
    torch.float64: tl.float64,
}

_WITH_W_NORM = tl.constexpr(True)  # flags of _dot_tile
_NO_W_NORM = tl.constexpr(False)

StatsReducer = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


@triton.jit
def _prep_x_kernel(
    x_ptr,
    x_mm_ptr,
    inv_x_ptr,
    n_rows,
    n_dim,
    stride_xn,
    stride_xd,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ACC: tl.constexpr,
    MM: tl.constexpr,
    EPS: tl.constexpr,
    WRITE_COPY: tl.constexpr,
):
    """``inv_x = 1 / max(|x_i|, eps)`` ``(N,)`` in ``ACC`` for ``BLOCK_R`` rows, and with ``WRITE_COPY`` the
    contiguous ``(N, D)`` copy of ``x`` in the dot dtype ``MM`` (the operand the other kernels stream)."""
    rows = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    row_mask = rows < n_rows
    x_sq = tl.zeros((BLOCK_R,), ACC)
    for d0 in range(0, n_dim, BLOCK_D):
        dims = d0 + tl.arange(0, BLOCK_D)
        mask = row_mask[:, None] & (dims < n_dim)[None, :]
        x = tl.load(x_ptr + rows[:, None] * stride_xn + dims[None, :] * stride_xd, mask=mask, other=0.0).to(ACC)
        x_sq += tl.sum(x * x, axis=1)
        if WRITE_COPY:
            tl.store(x_mm_ptr + rows[:, None] * n_dim + dims[None, :], x.to(MM), mask=mask)
    tl.store(inv_x_ptr + rows, 1.0 / tl.maximum(tl.sqrt(x_sq), EPS), mask=row_mask)


@triton.jit
def _dot_tile(
    x_ptr,
    w_ptr,
    rows,
    cols,
    row_mask,
    col_mask,
    n_dim,
    stride_xn,
    stride_xd,
    stride_wd,
    stride_wc,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    ACC: tl.constexpr,
    MM: tl.constexpr,
    DOT_ACC: tl.constexpr,
    W_NORM: tl.constexpr,
):
    """Raw dots ``x_i . W_j`` ``(BLOCK_M, BLOCK_N)`` in ``ACC``, over ``D`` in ``BLOCK_K`` chunks; ``x`` is read
    in ``MM`` (prepared), ``W`` in its own dtype and cast to ``MM`` in registers. With ``W_NORM`` also
    ``sum_d W_dj^2`` ``(BLOCK_N,)`` from the un-cast ``W`` (zeros otherwise). float32 and float64 dots are
    IEEE (no TF32)."""
    dots = tl.zeros((BLOCK_M, BLOCK_N), DOT_ACC)
    w_sq = tl.zeros((BLOCK_N,), ACC)
    ks = tl.arange(0, BLOCK_K)
    for k0 in range(0, n_dim, BLOCK_K):
        k = k0 + ks
        k_mask = k < n_dim
        xk = tl.load(
            x_ptr + rows[:, None] * stride_xn + k[None, :] * stride_xd,
            mask=row_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        wk = tl.load(
            w_ptr + k[:, None] * stride_wd + cols[None, :] * stride_wc,
            mask=k_mask[:, None] & col_mask[None, :],
            other=0.0,
        )
        if W_NORM:
            w_acc = wk.to(ACC)
            w_sq += tl.sum(w_acc * w_acc, axis=0)
        dots = tl.dot(xk.to(MM), wk.to(MM), dots, input_precision="ieee", out_dtype=DOT_ACC)
    return dots.to(ACC), w_sq


@triton.jit
def _cos_grad(cos, cols, row_mask, col_mask, label, t_logit, t_slope, r_weight, g_max, inv_g_sum, scale):
    """``g = dL/dcos`` ``(BLOCK_M, BLOCK_N)`` from the global row statistics; 0 outside the masks."""
    is_target = cols[None, :] == label[:, None]
    z = tl.where(is_target, t_logit[:, None], scale * cos)
    p = tl.exp(z - g_max[:, None]) * inv_g_sum[:, None]
    g = tl.where(is_target, (p - 1.0) * t_slope[:, None], p * scale) * r_weight[:, None]
    return tl.where(row_mask[:, None] & col_mask[None, :], g, 0.0)


@triton.jit
def _stats_kernel(
    x_ptr,
    w_ptr,
    labels_ptr,
    t_logit_ptr,
    inv_x_ptr,
    inv_w_ptr,
    part_max_ptr,
    part_sum_ptr,
    n_rows,
    n_cols,
    n_dim,
    stride_xn,
    stride_xd,
    stride_wd,
    stride_wc,
    tiles_per_split,
    scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    ACC: tl.constexpr,
    MM: tl.constexpr,
    DOT_ACC: tl.constexpr,
    EPS: tl.constexpr,
):
    """Online row max and ``sum exp(z - max)`` of row tile ``m`` over the class tiles of split ``s``, for
    program ``(m, s)``; writes ``part_max[s, rows]`` and ``part_sum[s, rows]``, and (row tile 0 only) the
    inverse column norms ``inv_w`` of the split's classes, for the backward kernels."""
    split = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < n_rows
    rows = rows.to(tl.int64)
    label = tl.load(labels_ptr + rows, mask=row_mask, other=-1)
    t_logit = tl.load(t_logit_ptr + rows, mask=row_mask, other=0.0).to(ACC)
    inv_x = tl.load(inv_x_ptr + rows, mask=row_mask, other=0.0).to(ACC)
    m = tl.full((BLOCK_M,), float("-inf"), ACC)
    d = tl.zeros((BLOCK_M,), ACC)
    first_col = split * tiles_per_split * BLOCK_N
    last_col = tl.minimum(first_col + tiles_per_split * BLOCK_N, n_cols)
    for c0 in range(first_col, last_col, BLOCK_N):
        cols = (c0 + tl.arange(0, BLOCK_N)).to(tl.int64)
        col_mask = cols < last_col
        dots, w_sq = _dot_tile(
            x_ptr, w_ptr, rows, cols, row_mask, col_mask, n_dim, stride_xn, stride_xd, stride_wd, stride_wc,
            BLOCK_M, BLOCK_N, BLOCK_K, ACC, MM, DOT_ACC, _WITH_W_NORM,
        )  # fmt: skip
        inv_w = 1.0 / tl.maximum(tl.sqrt(w_sq), EPS)
        tl.store(inv_w_ptr + cols, inv_w, mask=col_mask & ((cols * 0 + tl.program_id(0)) == 0))
        cos = dots * inv_x[:, None] * inv_w[None, :]
        z = tl.where(cols[None, :] == label[:, None], t_logit[:, None], scale * cos)
        z = tl.where(col_mask[None, :], z, float("-inf"))
        m_new = tl.maximum(m, tl.max(z, axis=1))
        d = d * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new[:, None]), axis=1)
        m = m_new
    out = split * n_rows + rows
    tl.store(part_max_ptr + out, m, mask=row_mask)
    tl.store(part_sum_ptr + out, d, mask=row_mask)


@triton.jit
def _loss_and_grad_target(row_max, row_sum, t_logit, r_weight):
    """``loss = M + log S - t`` and ``dL/dt = rw (exp(t - M) / S - 1)``."""
    loss = row_max + tl.log(row_sum) - t_logit
    grad_target = r_weight * (tl.exp(t_logit - row_max) / row_sum - 1.0)
    return loss, grad_target


@triton.jit
def _combine_kernel(
    part_max_ptr,
    part_sum_ptr,
    row_max_ptr,
    row_sum_ptr,
    t_logit_ptr,
    r_weight_ptr,
    loss_ptr,
    grad_target_ptr,
    n_rows,
    n_splits,
    BLOCK: tl.constexpr,
    ACC: tl.constexpr,
    FINAL: tl.constexpr,
):
    """Combine ``(S, N)`` partial statistics into ``(N,)`` ones; with ``FINAL`` also write loss and dL/dt."""
    rows = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
    mask = rows < n_rows
    row_max = tl.full((BLOCK,), float("-inf"), ACC)
    for s in range(n_splits):
        row_max = tl.maximum(row_max, tl.load(part_max_ptr + s * n_rows + rows, mask=mask, other=0.0))
    row_sum = tl.zeros((BLOCK,), ACC)
    for s in range(n_splits):
        m_s = tl.load(part_max_ptr + s * n_rows + rows, mask=mask, other=0.0)
        d_s = tl.load(part_sum_ptr + s * n_rows + rows, mask=mask, other=1.0)
        row_sum += d_s * tl.exp(m_s - row_max)
    tl.store(row_max_ptr + rows, row_max, mask=mask)
    tl.store(row_sum_ptr + rows, row_sum, mask=mask)
    if FINAL:
        t_logit = tl.load(t_logit_ptr + rows, mask=mask, other=0.0).to(ACC)
        r_weight = tl.load(r_weight_ptr + rows, mask=mask, other=0.0).to(ACC)
        loss, grad_target = _loss_and_grad_target(row_max, row_sum, t_logit, r_weight)
        tl.store(loss_ptr + rows, loss, mask=mask)
        tl.store(grad_target_ptr + rows, grad_target, mask=mask)


@triton.jit
def _loss_kernel(
    row_max_ptr,
    row_sum_ptr,
    t_logit_ptr,
    r_weight_ptr,
    loss_ptr,
    grad_target_ptr,
    n_rows,
    BLOCK: tl.constexpr,
    ACC: tl.constexpr,
):
    """Loss and dL/dt from the global ``(N,)`` statistics (sharded)."""
    rows = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
    mask = rows < n_rows
    row_max = tl.load(row_max_ptr + rows, mask=mask, other=0.0).to(ACC)
    row_sum = tl.load(row_sum_ptr + rows, mask=mask, other=1.0).to(ACC)
    t_logit = tl.load(t_logit_ptr + rows, mask=mask, other=0.0).to(ACC)
    r_weight = tl.load(r_weight_ptr + rows, mask=mask, other=0.0).to(ACC)
    loss, grad_target = _loss_and_grad_target(row_max, row_sum, t_logit, r_weight)
    tl.store(loss_ptr + rows, loss, mask=mask)
    tl.store(grad_target_ptr + rows, grad_target, mask=mask)


@triton.jit
def _load_row_vectors(
    labels_ptr, t_logit_ptr, t_slope_ptr, r_weight_ptr, g_max_ptr, g_sum_ptr, rows, row_mask, ACC: tl.constexpr
):
    """The per-row inputs of :func:`_cos_grad` for a row tile."""
    label = tl.load(labels_ptr + rows, mask=row_mask, other=-1)
    t_logit = tl.load(t_logit_ptr + rows, mask=row_mask, other=0.0).to(ACC)
    t_slope = tl.load(t_slope_ptr + rows, mask=row_mask, other=0.0).to(ACC)
    r_weight = tl.load(r_weight_ptr + rows, mask=row_mask, other=0.0).to(ACC)
    g_max = tl.load(g_max_ptr + rows, mask=row_mask, other=0.0).to(ACC)
    inv_g_sum = 1.0 / tl.load(g_sum_ptr + rows, mask=row_mask, other=1.0).to(ACC)
    return label, t_logit, t_slope, r_weight, g_max, inv_g_sum


@triton.jit
def _grad_w_kernel(
    x_ptr,
    w_ptr,
    labels_ptr,
    t_logit_ptr,
    t_slope_ptr,
    r_weight_ptr,
    g_max_ptr,
    g_sum_ptr,
    inv_x_ptr,
    inv_w_ptr,
    grad_w_ptr,
    n_rows,
    n_cols,
    n_dim,
    stride_xn,
    stride_xd,
    stride_wd,
    stride_wc,
    stride_gd,
    stride_gc,
    scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ACC: tl.constexpr,
    MM: tl.constexpr,
    DOT_ACC: tl.constexpr,
):
    """``grad_w[dims, cols]`` of class tile ``n`` and ``D`` chunk ``k`` (program ``(n, k)``), over all rows."""
    cols = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    col_mask = cols < n_cols
    dims = (tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
    dim_mask = dims < n_dim
    acc_a = tl.zeros((BLOCK_D, BLOCK_N), DOT_ACC)  # A_j = sum_i g_ij a_i x_i, this chunk of D
    coef = tl.zeros((BLOCK_N,), ACC)  # c_j = sum_i g_ij cos_ij
    inv_w = tl.load(inv_w_ptr + cols, mask=col_mask, other=0.0)
    for r0 in range(0, n_rows, BLOCK_M):
        rows = (r0 + tl.arange(0, BLOCK_M)).to(tl.int64)
        row_mask = rows < n_rows
        label, t_logit, t_slope, r_weight, g_max, inv_g_sum = _load_row_vectors(
            labels_ptr, t_logit_ptr, t_slope_ptr, r_weight_ptr, g_max_ptr, g_sum_ptr, rows, row_mask, ACC
        )
        inv_x = tl.load(inv_x_ptr + rows, mask=row_mask, other=0.0)
        dots, _ = _dot_tile(
            x_ptr, w_ptr, rows, cols, row_mask, col_mask, n_dim, stride_xn, stride_xd, stride_wd, stride_wc,
            BLOCK_M, BLOCK_N, BLOCK_K, ACC, MM, DOT_ACC, _NO_W_NORM,
        )  # fmt: skip
        cos = dots * inv_x[:, None] * inv_w[None, :]
        g = _cos_grad(cos, cols, row_mask, col_mask, label, t_logit, t_slope, r_weight, g_max, inv_g_sum, scale)
        coef += tl.sum(g * cos, axis=0)
        x_t = tl.load(
            x_ptr + rows[None, :] * stride_xn + dims[:, None] * stride_xd,
            mask=dim_mask[:, None] & row_mask[None, :],
            other=0.0,
        )
        g_a = g * inv_x[:, None]
        acc_a = tl.dot(x_t.to(MM), g_a.to(MM), acc_a, input_precision="ieee", out_dtype=DOT_ACC)
    w = tl.load(
        w_ptr + dims[:, None] * stride_wd + cols[None, :] * stride_wc,
        mask=dim_mask[:, None] & col_mask[None, :],
        other=0.0,
    ).to(ACC)
    grad = inv_w[None, :] * (acc_a.to(ACC) - (coef * inv_w)[None, :] * w)
    tl.store(
        grad_w_ptr + dims[:, None] * stride_gd + cols[None, :] * stride_gc,
        grad.to(grad_w_ptr.dtype.element_ty),
        mask=dim_mask[:, None] & col_mask[None, :],
    )


@triton.jit
def _grad_x_kernel(
    x_ptr,
    w_ptr,
    labels_ptr,
    t_logit_ptr,
    t_slope_ptr,
    r_weight_ptr,
    g_max_ptr,
    g_sum_ptr,
    inv_x_ptr,
    inv_w_ptr,
    part_b_ptr,
    part_r_ptr,
    n_rows,
    n_cols,
    n_dim,
    stride_xn,
    stride_xd,
    stride_wd,
    stride_wc,
    tiles_per_split,
    scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ACC: tl.constexpr,
    MM: tl.constexpr,
    DOT_ACC: tl.constexpr,
):
    """Partial ``B[s, rows, dims]`` and ``r[s, rows]`` of row tile ``m`` over split ``s``, for program
    ``(m, s, k)`` (``k``: the chunk of ``D``); ``part_b`` is ``(S, N, D)`` contiguous, ``part_r`` ``(S, N)``."""
    split = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < n_rows
    rows = rows.to(tl.int64)
    dim_chunk = tl.program_id(2)
    dims = (dim_chunk * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
    dim_mask = dims < n_dim
    label, t_logit, t_slope, r_weight, g_max, inv_g_sum = _load_row_vectors(
        labels_ptr, t_logit_ptr, t_slope_ptr, r_weight_ptr, g_max_ptr, g_sum_ptr, rows, row_mask, ACC
    )
    inv_x = tl.load(inv_x_ptr + rows, mask=row_mask, other=0.0)
    acc_b = tl.zeros((BLOCK_M, BLOCK_D), DOT_ACC)  # B_i = sum_j g_ij b_j W_j, this chunk of D
    coef = tl.zeros((BLOCK_M,), ACC)  # r_i = sum_j g_ij cos_ij
    first_col = split * tiles_per_split * BLOCK_N
    last_col = tl.minimum(first_col + tiles_per_split * BLOCK_N, n_cols)
    for c0 in range(first_col, last_col, BLOCK_N):
        cols = (c0 + tl.arange(0, BLOCK_N)).to(tl.int64)
        col_mask = cols < last_col
        inv_w = tl.load(inv_w_ptr + cols, mask=col_mask, other=0.0)
        dots, _ = _dot_tile(
            x_ptr, w_ptr, rows, cols, row_mask, col_mask, n_dim, stride_xn, stride_xd, stride_wd, stride_wc,
            BLOCK_M, BLOCK_N, BLOCK_K, ACC, MM, DOT_ACC, _NO_W_NORM,
        )  # fmt: skip
        cos = dots * inv_x[:, None] * inv_w[None, :]
        g = _cos_grad(cos, cols, row_mask, col_mask, label, t_logit, t_slope, r_weight, g_max, inv_g_sum, scale)
        coef += tl.sum(g * cos, axis=1)
        w_t = tl.load(
            w_ptr + cols[:, None] * stride_wc + dims[None, :] * stride_wd,
            mask=col_mask[:, None] & dim_mask[None, :],
            other=0.0,
        )
        g_b = g * inv_w[None, :]
        acc_b = tl.dot(g_b.to(MM), w_t.to(MM), acc_b, input_precision="ieee", out_dtype=DOT_ACC)
    out = (split * n_rows + rows)[:, None] * n_dim + dims[None, :]
    tl.store(part_b_ptr + out, acc_b.to(ACC), mask=row_mask[:, None] & dim_mask[None, :])
    tl.store(part_r_ptr + split * n_rows + rows, coef, mask=row_mask & ((rows * 0 + dim_chunk) == 0))


@triton.jit
def _finish_grad_x_kernel(
    x_ptr,
    inv_x_ptr,
    part_b_ptr,
    part_r_ptr,
    grad_x_ptr,
    n_rows,
    n_dim,
    n_splits,
    stride_xn,
    stride_xd,
    stride_gn,
    stride_gd,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ACC: tl.constexpr,
):
    """``grad_x = a (B - r a x)`` for ``BLOCK_R`` rows, summing the ``S`` split partials of ``B`` and ``r``."""
    rows = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    row_mask = rows < n_rows
    offsets = tl.arange(0, BLOCK_D)
    inv_x = tl.load(inv_x_ptr + rows, mask=row_mask, other=0.0)
    coef = tl.zeros((BLOCK_R,), ACC)
    for s in range(n_splits):
        coef += tl.load(part_r_ptr + s * n_rows + rows, mask=row_mask, other=0.0)
    for d0 in range(0, n_dim, BLOCK_D):
        dims = d0 + offsets
        mask = row_mask[:, None] & (dims < n_dim)[None, :]
        x = tl.load(x_ptr + rows[:, None] * stride_xn + dims[None, :] * stride_xd, mask=mask, other=0.0).to(ACC)
        acc_b = tl.zeros((BLOCK_R, BLOCK_D), ACC)
        for s in range(n_splits):
            acc_b += tl.load(part_b_ptr + (s * n_rows + rows)[:, None] * n_dim + dims[None, :], mask=mask, other=0.0)
        grad = inv_x[:, None] * (acc_b - (coef * inv_x)[:, None] * x)
        tl.store(
            grad_x_ptr + rows[:, None] * stride_gn + dims[None, :] * stride_gd,
            grad.to(grad_x_ptr.dtype.element_ty),
            mask=mask,
        )


class Tiles(NamedTuple):
    """Launch geometry: tile sizes (powers of two, >= 16 for ``tl.dot``), class splits and warps."""

    block_m: int  # rows per tile
    block_n: int  # classes per tile
    block_k: int  # D chunk of the logit dot
    block_d: int  # D extent of a gradient accumulator (grid axis over D chunks when D > block_d)
    col_splits: int  # S: class-tile ranges per row tile in the stats and grad_x passes
    num_warps: int


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _pow2_between(value: int, low: int, high: int) -> int:
    return max(low, min(high, triton.next_power_of_2(max(value, 1))))


def cuda_tiles(n_rows: int, n_cols: int, n_dim: int, mm_dtype: torch.dtype, sm_count: int) -> Tiles:
    """The CUDA launch geometry (untuned: a starting point for autotuning on an H100).

    8 warps; ``block_d`` up to ``MAX_BLOCK_D[mm_dtype]``; 64 x 64 tiles for 2-byte dots with ``D <= 128``,
    32 x 32 otherwise, a 32-wide ``D`` chunk in the dot: the largest tiles that compile for sm_90 without
    register spills (checked with ``cuobjdump -res-usage`` on ahead-of-time builds, see the tests). Splits: enough
    for ``PROGRAMS_PER_SM`` programs per SM in the stats and ``grad_x`` passes, at most one per class tile.
    """
    block_d = _pow2_between(n_dim, 16, MAX_BLOCK_D[mm_dtype])
    block_mn = 64 if mm_dtype.itemsize == 2 and block_d <= 128 else 32
    n_row_tiles = triton.cdiv(max(n_rows, 1), block_mn)
    n_class_tiles = triton.cdiv(max(n_cols, 1), block_mn)
    splits = min(n_class_tiles, max(1, triton.cdiv(PROGRAMS_PER_SM * sm_count, n_row_tiles)))
    return Tiles(block_mn, block_mn, 32, block_d, splits, 8)


def choose_tiles(n_rows: int, n_cols: int, n_dim: int, mm_dtype: torch.dtype, device: torch.device) -> Tiles:
    """Tile sizes and splits for an ``(N, D) x (D, C)`` problem with ``tl.dot`` operands in ``mm_dtype`` on
    ``device`` (tests monkeypatch this). CUDA: :func:`cuda_tiles`. Under the interpreter: one split, tiles as
    large as the problem (up to 64) since programs run one after another there.
    """
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return cuda_tiles(n_rows, n_cols, n_dim, mm_dtype, _sm_count(index))
    return Tiles(
        _pow2_between(n_rows, 16, 64),
        _pow2_between(n_cols, 16, 64),
        _pow2_between(n_dim, 16, 64),
        _pow2_between(n_dim, 16, MAX_BLOCK_D[mm_dtype]),
        1,
        4,
    )


_INTERPRETED = is_interpreted(_stats_kernel)  # at import: triton.jit chose the interpreter (TRITON_INTERPRET=1) or CUDA


def _check_inputs(
    x: Tensor, weight: Tensor, labels: Tensor, vectors: dict[str, Tensor], matmul_dtype: torch.dtype | None
) -> torch.dtype:
    """Validate shapes, dtypes and devices; return the accumulation dtype."""
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[0]:
        raise ValueError(f"x must be (N, D) and weight (D, C), got {tuple(x.shape)} and {tuple(weight.shape)}")
    for name, tensor in (("x", x), ("weight", weight)):
        if tensor.dtype not in _TL_DTYPES:
            raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {tensor.dtype}")
    n, c = x.shape[0], weight.shape[1]
    if c == 0:
        raise ValueError("weight has no columns: the softmax over zero classes is undefined")
    acc = torch.float64 if torch.float64 in (x.dtype, weight.dtype) else torch.float32
    if matmul_dtype is not None and matmul_dtype not in _TL_DTYPES:
        raise TypeError(f"matmul_dtype must be a floating dtype tl.dot accepts, got {matmul_dtype}")
    if labels.shape != (n,) or labels.dtype != torch.int64:
        raise ValueError(f"labels must be ({n},) int64, got {tuple(labels.shape)} {labels.dtype}")
    for name, tensor in vectors.items():
        if tensor.shape != (n,) or tensor.dtype != acc:
            raise ValueError(f"{name} must be ({n},) {acc}, got {tuple(tensor.shape)} {tensor.dtype}")
    for name, tensor in (("weight", weight), ("labels", labels), *vectors.items()):
        if tensor.device != x.device:
            raise ValueError(f"{name} is on {tensor.device} but x is on {x.device}")
    if x.device.type != "cuda" and not _INTERPRETED:
        raise RuntimeError(
            f"the Triton kernels were compiled for CUDA but x is on {x.device}: set TRITON_INTERPRET=1 before "
            "arcloss.ops.triton_whole_pass is first imported to run them on CPU tensors"
        )
    return acc


def _launch(kernel: Any, grid: tuple[int, ...]) -> Callable[..., Any]:
    """``kernel[grid]``: the launcher of a Triton kernel, typed loosely (its constexpr and launch options are
    checked by Triton, not by the type checker)."""
    return kernel[grid]


def whole_pass_margin_ce(
    x: Tensor,
    weight: Tensor,
    labels: Tensor,
    target_logit: Tensor,
    target_slope: Tensor,
    row_weight: Tensor,
    scale: float,
    *,
    want_grad_x: bool,
    want_grad_w: bool,
    matmul_dtype: torch.dtype | None,
    reduce_stats: StatsReducer | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:
    """Per-row margin cross-entropy and its gradients in one fused pass (see the module docstring).

    Args:
        x: ``(N, D)`` embeddings (float16/bfloat16/float32/float64), not normalised, any strides.
        weight: ``(D, C)`` class centres, not normalised, any strides.
        labels: ``(N,)`` int64 target column in ``[0, C)``, or -1 where the target is in no column here.
        target_logit: ``(N,)`` ``t_i = s * phi(cos_iy)`` in the accumulation dtype.
        target_slope: ``(N,)`` ``dt_i / dcos_iy`` (scaled by ``s``), accumulation dtype.
        row_weight: ``(N,)`` weight of each row's loss in the gradient, accumulation dtype.
        scale: ``s``; non-target logits are ``s * cos_ij``.
        want_grad_x, want_grad_w: which gradients to compute.
        matmul_dtype: dtype of the ``tl.dot`` operands; ``None``: the accumulation dtype.
        reduce_stats: sharded loss: maps this shard's ``(row_max, row_sum)`` ``(N,)`` to the global ones.

    Returns:
        ``(loss, grad_x, grad_w, grad_target)``: ``loss`` and ``grad_target = dL/dt`` are ``(N,)`` in the
        accumulation dtype (float64 if ``x`` or ``weight`` is, else float32); ``grad_x`` ``(N, D)`` in
        ``x.dtype`` and ``grad_w`` ``(D, C)`` in ``weight.dtype``, or ``None`` where not wanted.
    """
    vectors = {"target_logit": target_logit, "target_slope": target_slope, "row_weight": row_weight}
    acc = _check_inputs(x, weight, labels, vectors, matmul_dtype)
    n, d = x.shape
    c = weight.shape[1]
    device = x.device
    loss = torch.empty(n, dtype=acc, device=device)
    grad_target = torch.empty(n, dtype=acc, device=device)
    grad_x = torch.empty(n, d, dtype=x.dtype, device=device) if want_grad_x else None
    grad_w = torch.empty(d, c, dtype=weight.dtype, device=device) if want_grad_w else None
    if n == 0:
        if grad_w is not None:
            grad_w.zero_()
        return loss, grad_x, grad_w, grad_target
    mm = matmul_dtype or acc
    tiles = choose_tiles(n, c, d, mm, device)
    n_class_tiles = triton.cdiv(c, tiles.block_n)
    tiles_per_split = triton.cdiv(n_class_tiles, min(tiles.col_splits, n_class_tiles))
    splits = triton.cdiv(n_class_tiles, tiles_per_split)  # no empty split: every partial max is finite
    n_row_tiles = triton.cdiv(n, tiles.block_m)
    n_dim_chunks = triton.cdiv(d, tiles.block_d)
    labels, target_logit, target_slope, row_weight = (
        t.contiguous() for t in (labels, target_logit, target_slope, row_weight)
    )
    tl_acc, tl_mm = _TL_DTYPES[acc], _TL_DTYPES[mm]
    # The dot operand for x: x itself when already in the dot dtype, else a contiguous (N, D) copy in it.
    x_mm = x if x.dtype == mm else torch.empty(n, d, dtype=mm, device=device)
    inv_x = torch.empty(n, dtype=acc, device=device)
    inv_w = torch.empty(c, dtype=acc, device=device)
    geometry = {
        "n_dim": d,
        "stride_xn": x_mm.stride(0),
        "stride_xd": x_mm.stride(1),
        "stride_wd": weight.stride(0),
        "stride_wc": weight.stride(1),
    }
    dot = {
        "BLOCK_M": tiles.block_m,
        "BLOCK_N": tiles.block_n,
        "BLOCK_K": tiles.block_k,
        "ACC": tl_acc,
        "MM": tl_mm,
        "DOT_ACC": tl.float64 if mm == torch.float64 else tl.float32,
        "num_warps": tiles.num_warps,
    }
    row_inputs = (labels, target_logit, target_slope, row_weight)
    part_max = torch.empty(splits, n, dtype=acc, device=device)
    part_sum = torch.empty_like(part_max)
    row_max = torch.empty(n, dtype=acc, device=device)
    row_sum = torch.empty_like(row_max)
    vector_grid = (triton.cdiv(n, _ROWS_PER_VECTOR_PROGRAM),)
    with device_guard(device):
        _launch(_prep_x_kernel, (triton.cdiv(n, _FINISH_ROWS),))(
            x, x_mm, inv_x, n, d, x.stride(0), x.stride(1),
            BLOCK_R=_FINISH_ROWS, BLOCK_D=min(tiles.block_d, 128), ACC=tl_acc, MM=tl_mm, EPS=NORM_EPS,
            WRITE_COPY=x_mm is not x,
        )  # fmt: skip
        _launch(_stats_kernel, (n_row_tiles, splits))(
            x_mm, weight, labels, target_logit, inv_x, inv_w, part_max, part_sum, n, c, **geometry,
            tiles_per_split=tiles_per_split, scale=scale, EPS=NORM_EPS, **dot,
        )  # fmt: skip
        _launch(_combine_kernel, vector_grid)(
            part_max, part_sum, row_max, row_sum, target_logit, row_weight, loss, grad_target, n, splits,
            BLOCK=_ROWS_PER_VECTOR_PROGRAM, ACC=tl_acc, FINAL=reduce_stats is None,
        )  # fmt: skip
    if reduce_stats is not None:
        row_max, row_sum = (t.to(acc).contiguous() for t in reduce_stats(row_max, row_sum))
        with device_guard(device):
            _launch(_loss_kernel, vector_grid)(
                row_max, row_sum, target_logit, row_weight, loss, grad_target, n,
                BLOCK=_ROWS_PER_VECTOR_PROGRAM, ACC=tl_acc,
            )  # fmt: skip
    with device_guard(device):
        if grad_w is not None:
            _launch(_grad_w_kernel, (n_class_tiles, n_dim_chunks))(
                x_mm, weight, *row_inputs, row_max, row_sum, inv_x, inv_w, grad_w, n, c, **geometry,
                stride_gd=grad_w.stride(0), stride_gc=grad_w.stride(1), scale=scale, BLOCK_D=tiles.block_d, **dot,
            )  # fmt: skip
        if grad_x is not None:
            part_b = torch.empty(splits, n, d, dtype=acc, device=device)
            part_r = torch.empty(splits, n, dtype=acc, device=device)
            _launch(_grad_x_kernel, (n_row_tiles, splits, n_dim_chunks))(
                x_mm, weight, *row_inputs, row_max, row_sum, inv_x, inv_w, part_b, part_r, n, c, **geometry,
                tiles_per_split=tiles_per_split, scale=scale, BLOCK_D=tiles.block_d, **dot,
            )  # fmt: skip
            _launch(_finish_grad_x_kernel, (triton.cdiv(n, _FINISH_ROWS),))(
                x, inv_x, part_b, part_r, grad_x, n, d, splits, x.stride(0), x.stride(1), grad_x.stride(0),
                grad_x.stride(1), BLOCK_R=_FINISH_ROWS, BLOCK_D=min(tiles.block_d, 128), ACC=tl_acc,
            )  # fmt: skip
    return loss, grad_x, grad_w, grad_target
