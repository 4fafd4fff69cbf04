"""The fused loss as a ``torch.library`` custom op (opaque to ``torch.compile``) and its autograd rule.

For ``reduction="mean"``/``"sum"`` the gradients are computed during the forward (the loss is a scalar, so
its row weights are known) and the backward only scales them by the incoming gradient, in place. For
``reduction="none"`` the row weights are the incoming gradient, known only in the backward: the forward
computes losses alone and the backward runs the chunked pass again with gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _backends
from ._fused import accumulation_dtype, margin_ce_chunks
from .margins import AngularMargin

_EMPTY = (0,)


@torch.library.custom_op("arcloss::margin_ce", mutates_args=())
def margin_ce_op(
    x: Tensor,
    weight: Tensor,
    labels: Tensor,
    row_weight: Tensor,
    m1: float,
    m2: float,
    m3: float,
    easy_margin: bool,
    scale: float,
    want_grad_x: bool,
    want_grad_w: bool,
    matmul_dtype: torch.dtype | None,
    rows_per_chunk: int,
    backend: str,
    sub_centers: int = 1,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row losses ``(N,)`` and the gradients of ``sum_i row_weight_i * loss_i`` (empty if not wanted)."""
    loss, grad_x, grad_w = margin_ce_chunks(
        x,
        weight,
        labels,
        row_weight,
        AngularMargin(m1, m2, m3, easy_margin),
        scale,
        want_grad_x=want_grad_x,
        want_grad_w=want_grad_w,
        matmul_dtype=matmul_dtype,
        rows_per_chunk=rows_per_chunk or None,
        softmax=_backends.softmax_module(backend),
        sub_centers=sub_centers,
    )
    return (
        loss,
        x.new_empty(_EMPTY) if grad_x is None else grad_x,
        x.new_empty(_EMPTY) if grad_w is None else grad_w,
    )


@margin_ce_op.register_fake
def _(
    x,
    weight,
    labels,
    row_weight,
    m1,
    m2,
    m3,
    easy_margin,
    scale,
    want_grad_x,
    want_grad_w,
    matmul_dtype,
    rows_per_chunk,
    backend,
    sub_centers=1,
):
    acc = accumulation_dtype(x.dtype, weight.dtype)
    loss = x.new_empty((x.shape[0],), dtype=acc)
    grad_x = x.new_empty(x.shape) if want_grad_x else x.new_empty(_EMPTY)
    grad_w = weight.new_empty(weight.shape) if want_grad_w else x.new_empty(_EMPTY)
    return loss, grad_x, grad_w


class MarginCrossEntropy(torch.autograd.Function):
    """``loss = reduce_i( logsumexp_j z_ij - z_iy )`` with margin logits; see :mod:`arcloss._fused`.

    ``options`` is ``(matmul_dtype, rows_per_chunk, backend, sub_centers)``, passed through to the op.
    """

    @staticmethod
    def forward(ctx, x, weight, labels, margin: AngularMargin, scale, reduction, options):
        n = x.shape[0]
        acc = accumulation_dtype(x.dtype, weight.dtype)
        ctx.reduction = reduction
        ctx.op_args = ((margin.m1, margin.m2, margin.m3, margin.easy_margin, scale), options)
        if reduction == "none":
            ctx.save_for_backward(x, weight, labels)
            return _call_op(ctx, x, weight, labels, x.new_ones((n,), dtype=acc), False, False)[0]
        row_weight = x.new_full((n,), 1.0 / n if reduction == "mean" else 1.0, dtype=acc)
        ctx.want = ctx.needs_input_grad[:2]
        loss, grad_x, grad_w = _call_op(ctx, x, weight, labels, row_weight, *ctx.want)
        ctx.save_for_backward(grad_x, grad_w)
        return (loss * row_weight).sum()

    @staticmethod
    def backward(ctx, grad_out):
        no_grads = (None,) * 5
        if ctx.reduction == "none":
            x, weight, labels = ctx.saved_tensors
            want_x, want_w = ctx.needs_input_grad[:2]
            _, grad_x, grad_w = _call_op(ctx, x, weight, labels, grad_out.contiguous(), want_x, want_w)
            return (grad_x if want_x else None, grad_w if want_w else None, *no_grads)
        grad_x, grad_w = ctx.saved_tensors
        want_x, want_w = ctx.want
        # Scaling in place spends no second W-sized buffer; the saved tensors' version counters make a
        # second backward through the same graph (retain_graph=True) raise instead of double-scaling.
        unit = grad_out.device.type == "cpu" and not torch.compiler.is_compiling() and float(grad_out) == 1.0
        if not unit:
            if want_x:
                grad_x.mul_(grad_out)
            if want_w:
                grad_w.mul_(grad_out)
        return (grad_x if want_x else None, grad_w if want_w else None, *no_grads)


def _call_op(ctx, x, weight, labels, row_weight, want_x, want_w):
    params, (matmul_dtype, rows_per_chunk, backend, sub_centers) = ctx.op_args
    return margin_ce_op(
        x, weight, labels, row_weight, *params, want_x, want_w, matmul_dtype, rows_per_chunk, backend, sub_centers
    )
