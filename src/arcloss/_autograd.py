"""The fused pass as ``torch.library`` custom ops (opaque to ``torch.compile``) and its autograd rule.

Two ops, both run eagerly even inside a compiled graph:

- ``arcloss::target_cosines``: the exact target cosines (and the value checks of the inputs, so that they
  run under ``torch.compile`` too);
- ``arcloss::margin_ce``: the engine named by the plan (per-row losses and gradients).

For ``reduction="mean"``/``"sum"`` the gradients are computed during the forward (the loss is a scalar, so
its row weights are known) and the first backward only scales them by the incoming gradient, in place. A
second backward through a retained graph recomputes them (the first one consumed them). For
``reduction="none"`` the row weights are the incoming gradient, known only in the backward: the forward
computes losses alone and the backward runs the pass again with gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validation import check_values
from .ops import EngineInputs, Plan, get_engine
from .ops.plan import ShardSpec, accumulation_dtype
from .ops.targets import target_cosines

_EMPTY = (0,)


@torch.library.custom_op("arcloss::target_cosines", mutates_args=())
def target_cosines_op(
    x: Tensor,
    weight: Tensor,
    labels: Tensor,
    local_labels: Tensor,
    num_classes: int,
    sub_centers: int,
    validate: bool,
    shard: str,
) -> Tensor:
    """``(N,)`` target cosines (accumulation dtype) of ``x`` against this process's ``weight``.

    ``labels`` are the global classes (checked against ``num_classes`` when ``validate``); ``local_labels``
    the classes among ``weight``'s columns, -1 where another shard owns them. Without ``validate`` a label
    that no shard owns still raises (a device-side assertion on CUDA), rather than training on garbage.
    """
    if validate:
        check_values(x, labels, num_classes)
    cos, owners = target_cosines(x, weight, local_labels, sub_centers, ShardSpec(shard) if shard else None)
    if not validate:
        message = f"labels must be in [0, num_classes={num_classes})"
        torch.ops.aten._assert_async.msg((owners == 1).all(), message)  # a device-side assert on CUDA
    return cos


@target_cosines_op.register_fake
def _(x, weight, labels, local_labels, num_classes, sub_centers, validate, shard):
    return x.new_empty((x.shape[0],), dtype=accumulation_dtype(x.dtype, weight.dtype))


@torch.library.custom_op("arcloss::margin_ce", mutates_args=())
def margin_ce_op(
    x: Tensor,
    weight: Tensor,
    labels: Tensor,
    target_logit: Tensor,
    target_slope: Tensor,
    row_weight: Tensor,
    scale: float,
    want_grad_x: bool,
    want_grad_w: bool,
    engine: str,
    matmul_dtype: torch.dtype | None,
    rows_per_chunk: int,
    sub_centers: int,
    shard: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-row losses ``(N,)``, the gradients of ``sum_i row_weight_i * loss_i`` for ``x`` and ``weight``
    (empty if not wanted) and for the target logits; see :class:`arcloss.ops.EngineOutputs`."""
    plan = Plan.from_op_args(engine, matmul_dtype, rows_per_chunk, sub_centers, shard)
    inputs = EngineInputs(x, weight, labels, target_logit, target_slope, row_weight, scale, want_grad_x, want_grad_w)
    out = get_engine(plan.engine).run(inputs, plan)
    return (
        out.loss,
        x.new_empty(_EMPTY) if out.grad_x is None else out.grad_x,
        x.new_empty(_EMPTY) if out.grad_w is None else out.grad_w,
        out.grad_target,
    )


@margin_ce_op.register_fake
def _(x, weight, labels, target_logit, target_slope, row_weight, scale, want_grad_x, want_grad_w, *plan):
    acc = accumulation_dtype(x.dtype, weight.dtype)
    loss = x.new_empty((x.shape[0],), dtype=acc)
    grad_x = x.new_empty(x.shape) if want_grad_x else x.new_empty(_EMPTY)
    grad_w = weight.new_empty(weight.shape) if want_grad_w else x.new_empty(_EMPTY)
    return loss, grad_x, grad_w, x.new_empty((x.shape[0],), dtype=acc)


def _run(ctx, tensors, row_weight: Tensor, want_x: bool, want_w: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x, weight, labels, target_logit, target_slope = tensors
    plan: Plan = ctx.plan
    return margin_ce_op(
        x, weight, labels, target_logit, target_slope, row_weight, ctx.scale, want_x, want_w, *plan.op_args()
    )


class MarginCrossEntropy(torch.autograd.Function):
    """``reduce_i(logsumexp_j z_ij - t_i)``, ``z_ij = s cos_ij`` off target and ``z_iy = t_i``.

    Inputs: ``x`` ``(N, D)``, ``weight`` ``(D, C)``, ``labels`` ``(N,)`` (-1: another shard's class),
    ``target_logit`` ``(N,)`` (may require grad, e.g. through the feature norm), ``target_slope`` ``(N,)``
    detached ``d t / d cos``, ``scale``, ``reduction``, and the :class:`~arcloss.ops.Plan`.
    """

    @staticmethod
    def forward(ctx, x, weight, labels, target_logit, target_slope, scale: float, reduction: str, plan: Plan):
        n = x.shape[0]
        acc = accumulation_dtype(x.dtype, weight.dtype)
        ctx.scale, ctx.reduction, ctx.plan = scale, reduction, plan
        tensors = (x, weight, labels, target_logit.detach(), target_slope)
        ctx.save_for_backward(*tensors)
        ctx.grads = None
        if reduction == "none":
            return _run(ctx, tensors, x.new_ones((n,), dtype=acc), False, False)[0]
        ctx.row_weight = 1.0 / n if reduction == "mean" else 1.0
        row_weight = x.new_full((n,), ctx.row_weight, dtype=acc)
        loss, grad_x, grad_w, grad_target = _run(ctx, tensors, row_weight, *ctx.needs_input_grad[:2])
        # Kept as attributes, not saved tensors: the first backward scales them in place and lets them go.
        ctx.grads = (grad_x, grad_w, grad_target)
        return (loss * row_weight).sum()

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "arcloss losses have no second derivative: backward(create_graph=True) (double backward) is not "
                "supported, because the fused pass computes the first derivative itself"
            )
        want_x, want_w, _, want_t = ctx.needs_input_grad[:4]
        if ctx.grads is None:  # reduction="none", or a second backward through a retained graph
            tensors = ctx.saved_tensors
            x, weight = tensors[:2]
            row_weight = grad_out if ctx.reduction == "none" else grad_out * ctx.row_weight
            row_weight = row_weight.to(accumulation_dtype(x.dtype, weight.dtype)).expand(x.shape[0]).contiguous()
            _, grad_x, grad_w, grad_target = _run(ctx, tensors, row_weight, want_x, want_w)
        else:
            grad_x, grad_w, grad_target = ctx.grads
            ctx.grads = None
            # In place: no second W-sized buffer, also for the non-unit gradient of a GradScaler.
            unit = grad_out.device.type == "cpu" and float(grad_out) == 1.0
            if not unit:
                for grad, wanted in ((grad_x, want_x), (grad_w, want_w), (grad_target, want_t)):
                    if wanted:
                        grad.mul_(grad_out)
        return (
            grad_x if want_x else None,
            grad_w if want_w else None,
            None,
            grad_target if want_t else None,
            None,
            None,
            None,
            None,
        )
