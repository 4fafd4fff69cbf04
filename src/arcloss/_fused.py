"""The fused margin-softmax cross-entropy: chunked over rows, gradients computed during the forward.

Shapes: ``x`` is ``(N, D)`` embeddings, ``weight`` is ``(D, C)`` class centres (pytorch-metric-learning's
layout), ``labels`` is ``(N,)`` int64. With ``xhat = x / |x|`` and ``dots = xhat @ W``, the logits are
``z_ij = s * dots_ij / |W_j|`` except ``z_iy = s * phi(cos_iy)`` (see :mod:`arcloss.margins`), and the
loss of row i is ``logsumexp_j z_ij - z_iy``.

The pass over one chunk of K rows is (``G`` = d loss / d dots, left in the chunk buffer by the softmax):

1. ``buf = xhat[K] @ W``                              -- GEMM 1, (K, C)
2. softmax statistics and ``G``, in place in ``buf``   -- :mod:`arcloss._softmax_torch` / ``_softmax_triton``
3. ``grad_xhat[K] = G @ W.T``                        -- GEMM 2, (K, D)
4. ``A += xhat[K].T @ G``                            -- GEMM 3, (D, C), the first chunk writes it

Three GEMMs in all, as plain ``nn.Linear`` + ``cross_entropy``; nothing of size N x C is ever alive, only
``buf`` (K x C). The normalisations are folded in rather than materialised: ``1 / |W_j|`` scales the
columns of ``buf``, and the gradient is projected through both normalisations afterwards:

- ``d/dx_i    = (g_i - xhat_i (xhat_i . g_i)) / |x_i|`` with ``g = grad_xhat``  (small, N x D)
- ``d/dW_j    = A_j - W_j (W_j . A_j) / |W_j|^2``    -- in place on ``A``, in column blocks.

The target cosine is computed separately as ``xhat_i . W_y / |W_y|`` in the accumulation dtype (float32
even under autocast), so the margin is applied to an accurate cosine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType

import torch
from torch import Tensor

from . import _softmax_torch
from .margins import AngularMargin

NORM_EPS = 1e-12  # as torch.nn.functional.normalize, which pytorch-metric-learning uses
DEFAULT_MIN_CHUNK_BYTES = 16 * 2**20
DEFAULT_CHUNK_FRACTION = 0.25
_COLUMN_BLOCK = 8192
_ROW_BLOCK = 8

StatsReducer = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def accumulation_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float64 if any input is float64, else float32: the dtype of the softmax and margin math."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def chunk_rows(num_rows: int, row_bytes: int, weight_bytes: int, budget_bytes: int | None = None) -> int:
    """Rows per chunk so that the chunk buffers (``row_bytes`` per row) stay within the memory budget.

    The default budget is ``max(16 MiB, 0.25 * weight_bytes)``: the transient memory of the loss stays near
    a quarter of the class centres' size however many classes there are, and small problems run in one chunk.
    Chunks are balanced (``ceil(N / n)`` rows each), because each chunk streams the ``(D, C)`` gradient
    accumulator through memory once: fewer, larger chunks are faster.
    """
    if num_rows == 0:
        return 1
    if budget_bytes is None:
        budget_bytes = max(DEFAULT_MIN_CHUNK_BYTES, int(DEFAULT_CHUNK_FRACTION * weight_bytes))
    rows = max(1, min(num_rows, budget_bytes // max(1, row_bytes)))
    chunks = math.ceil(num_rows / rows)
    return math.ceil(num_rows / chunks)


def column_dots(a: Tensor, b: Tensor, dtype: torch.dtype) -> Tensor:
    """``(a * b).sum(0)`` for ``(D, C)`` tensors, as ``(C,)`` in ``dtype``, with no ``(D, C)`` temporary.

    On a CPU, torch's reduction over the outer dimension of a row-major tensor runs far below memory
    bandwidth. Accumulating blocks of contiguous rows into a ``(8, C)`` buffer with ``addcmul_`` streams each
    row once, and only the last 8-row reduction is an outer one. Measured on 2 cores, D=512: 29 ms instead of
    185 ms (``vecdot``) at C=100k, 4 ms instead of 16 ms at C=10k. GPUs reduce well either way.
    """
    if a.device.type != "cpu" or a.shape[0] <= _ROW_BLOCK:
        return torch.linalg.vecdot(a.to(dtype), b.to(dtype), dim=0)
    rows = a.shape[0] - a.shape[0] % _ROW_BLOCK
    acc = torch.mul(a[:_ROW_BLOCK].to(dtype), b[:_ROW_BLOCK].to(dtype))
    for start in range(_ROW_BLOCK, rows, _ROW_BLOCK):
        acc.addcmul_(a[start : start + _ROW_BLOCK], b[start : start + _ROW_BLOCK])
    out = acc.sum(0)
    for row in range(rows, a.shape[0]):
        out.addcmul_(a[row], b[row])
    return out


def margin_ce_chunks(
    x: Tensor,
    weight: Tensor,
    labels: Tensor,
    row_weight: Tensor,
    margin: AngularMargin,
    scale: float,
    *,
    want_grad_x: bool,
    want_grad_w: bool,
    matmul_dtype: torch.dtype | None = None,
    rows_per_chunk: int | None = None,
    softmax: ModuleType = _softmax_torch,
    reduce_stats: StatsReducer | None = None,
    sub_centers: int = 1,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Per-row losses and, optionally, the gradients of ``sum_i row_weight_i * loss_i``.

    Args:
        x: ``(N, D)`` embeddings, any float dtype.
        weight: ``(D, C)`` class centres, any float dtype.
        labels: ``(N,)`` int64 in ``[0, C)``; -1 where the target class lives in another shard.
        row_weight: ``(N,)`` weight of each row's loss in the gradient (``1/N`` for a mean).
        margin: the target-logit margin.
        scale: the logit scale ``s``.
        want_grad_x, want_grad_w: which gradients to compute (skipped work otherwise).
        matmul_dtype: dtype of the three GEMMs (e.g. bfloat16 under autocast); default: accumulation dtype.
        rows_per_chunk: override of :func:`chunk_rows`.
        softmax: the chunk-softmax implementation (:mod:`arcloss._softmax_torch` or the Triton one).
        reduce_stats: for a sharded loss, maps this shard's ``(row_max, row_sum)`` to the global ones.
        sub_centers: K sub-centres per class (sub-centre ArcFace): ``weight`` is ``(D, C * K)`` with class c's
            centres in columns ``c*K .. c*K+K-1``, and a class's cosine is the max over its sub-centres.

    Returns:
        ``(loss, grad_x, grad_w)``: ``loss`` is ``(N,)`` in the accumulation dtype; the gradients are in
        the dtypes of ``x`` and ``weight``, or ``None`` where not wanted.
    """
    n, d = x.shape
    c = weight.shape[1]
    num_classes = c // sub_centers
    acc = accumulation_dtype(x.dtype, weight.dtype)
    acc_bytes = torch.finfo(acc).bits // 8
    mm_dtype = matmul_dtype or acc
    xf = x.to(acc)
    x_norm = torch.linalg.vector_norm(xf, dim=1).clamp_min(NORM_EPS)
    xhat = xf / x_norm[:, None]
    w_mm = weight.to(mm_dtype)
    w_norm = column_dots(weight, weight, acc).sqrt_().clamp_min_(NORM_EPS)
    col_scale = scale / w_norm

    local = labels >= 0
    safe_labels = labels.clamp_min(0)
    exact_targets = sub_centers == 1 and mm_dtype != acc
    if exact_targets:
        # The GEMM runs in reduced precision: compute the target cosine in the accumulation dtype instead.
        target_cos = (xhat * weight.index_select(1, safe_labels).t().to(acc)).sum(1) / w_norm[safe_labels]
        all_target_phi, all_target_slope = margin(target_cos)
    if sub_centers > 1:
        inv_norm = w_norm.reciprocal()
        class_scale = torch.full((num_classes,), scale, dtype=acc, device=x.device)

    loss = torch.empty(n, dtype=acc, device=x.device)
    grad_xhat = torch.empty(n, d, dtype=acc, device=x.device) if want_grad_x else None
    grad_w = torch.empty(d, c, dtype=acc, device=x.device) if want_grad_w and n else None
    row_bytes = c * acc_bytes + (num_classes * (acc_bytes + 8) if sub_centers > 1 else 0)
    k = rows_per_chunk or chunk_rows(n, row_bytes, c * d * acc_bytes)
    buf = torch.empty(min(k, n), c, dtype=acc, device=x.device)
    if sub_centers > 1:
        best = torch.empty(min(k, n), num_classes, dtype=acc, device=x.device)
        best_index = torch.empty(min(k, n), num_classes, dtype=torch.int64, device=x.device)
    xhat_mm = xhat.to(mm_dtype)

    for start in range(0, n, k):
        rows = slice(start, min(start + k, n))
        size = rows.stop - start
        chunk = buf[:size]
        if mm_dtype == acc:
            torch.mm(xhat_mm[rows], w_mm, out=chunk)
        else:
            chunk.copy_(torch.mm(xhat_mm[rows], w_mm))
        lab = torch.where(local[rows], safe_labels[rows], -1)
        if exact_targets:
            logits, logit_scale = chunk, col_scale
            target_phi, target_slope = all_target_phi[rows], all_target_slope[rows]
        elif sub_centers == 1:
            logits, logit_scale = chunk, col_scale
            target_cos = chunk.gather(1, safe_labels[rows, None])[:, 0] / w_norm[safe_labels[rows]]
            target_phi, target_slope = margin(target_cos)
        else:
            # Cosines of every sub-centre, then each class's best one: the softmax runs over (K, C).
            logits, logit_scale = best[:size], class_scale
            torch.max(chunk.mul_(inv_norm).view(size, num_classes, sub_centers), dim=2, out=(logits, best_index[:size]))
            target_phi, target_slope = margin(logits.gather(1, safe_labels[rows, None])[:, 0])
        target_logit = scale * target_phi
        row_max, row_sum = softmax.row_stats(logits, lab, logit_scale, target_logit)
        global_max, global_sum = (row_max, row_sum) if reduce_stats is None else reduce_stats(row_max, row_sum)
        loss[rows] = global_max + torch.log(global_sum) - target_logit
        if not (want_grad_x or want_grad_w):
            continue
        row_factor = softmax.logit_grad_(
            logits, lab, logit_scale, target_logit, target_slope, row_max, global_max, global_sum
        )
        if sub_centers > 1:
            # Route each class's gradient to its best sub-centre; through the normalisation of W.
            chunk.zero_().view(size, num_classes, sub_centers).scatter_(
                2, best_index[:size, :, None], logits[:, :, None]
            )
            chunk.mul_(inv_norm)
        row_scale = row_weight[rows].to(acc)
        if row_factor is not None:
            row_scale = row_scale * row_factor
        grad_chunk = chunk if mm_dtype == acc else chunk.to(mm_dtype)
        if grad_xhat is not None:
            torch.mul(torch.mm(grad_chunk, w_mm.t()), row_scale[:, None], out=grad_xhat[rows])
        if grad_w is not None:
            lhs = (xhat[rows] * row_scale[:, None]).t().to(mm_dtype)
            if start == 0 and mm_dtype == acc:
                torch.mm(lhs, grad_chunk, out=grad_w)
            elif mm_dtype == acc:
                grad_w.addmm_(lhs, grad_chunk)
            else:
                _add_mm_blocked(grad_w, lhs, grad_chunk, first=start == 0)
    del buf

    grad_x = None
    if grad_xhat is not None:
        radial = (grad_xhat * xhat).sum(1, keepdim=True)
        grad_x = ((grad_xhat - xhat * radial) / x_norm[:, None]).to(x.dtype)
    if want_grad_w:
        if grad_w is None:
            grad_w = torch.zeros(d, c, dtype=acc, device=x.device)
        w_acc = weight if weight.dtype == acc else weight.to(acc)
        coef = column_dots(w_acc, grad_w, acc).div_(w_norm * w_norm)
        grad_w.addcmul_(w_acc, coef, value=-1.0)
        grad_w = grad_w.to(weight.dtype)
    return loss, grad_x, grad_w


def _add_mm_blocked(out: Tensor, lhs: Tensor, rhs: Tensor, *, first: bool) -> None:
    """``out (+)= lhs @ rhs`` for a reduced-precision product into a float32 accumulator, in column
    blocks, so the reduced-precision temporary stays ``(D, block)`` rather than ``(D, C)``."""
    for start in range(0, out.shape[1], _COLUMN_BLOCK):
        block = slice(start, start + _COLUMN_BLOCK)
        product = torch.mm(lhs, rhs[:, block])
        if first:
            out[:, block].copy_(product)
        else:
            out[:, block].add_(product)
