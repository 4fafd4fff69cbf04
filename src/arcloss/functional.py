"""Functional API: the losses as functions of embeddings, class centres and labels.

All functions take ``embeddings`` ``(N, D)``, ``weight`` ``(D, C)`` (pytorch-metric-learning's layout) and
``labels`` ``(N,)``; angular margins are in **degrees**. They validate their inputs, pick the engine, keep
the margin and softmax math in float32 under autocast, and never change the dtype of ``weight``.

:func:`margin_loss` takes any :class:`~arcloss.margins.Margin`; :func:`arcface_loss`, :func:`cosface_loss`
and :func:`combined_margin_loss` are it with :class:`~arcloss.margins.AngularMargin`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import Tensor

from . import ops
from ._autograd import MarginCrossEntropy, target_cosines_op
from ._validation import (
    check_choice,
    check_inputs,
    check_rows_per_chunk,
    check_scale,
    check_size,
    check_weight,
)
from .margins import AngularMargin, Margin
from .ops import Plan, ShardSpec, accumulation_dtype

__all__ = ["arcface_loss", "combined_margin_loss", "cosface_loss", "cosine_logits", "margin_loss"]

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS = ("mean", "sum", "none")


def matmul_dtype(embeddings: Tensor, weight: Tensor) -> torch.dtype | None:
    """The GEMM dtype: the autocast dtype, else a reduced dtype both operands already share, else None
    (the float32/float64 accumulation dtype)."""
    device = embeddings.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    if embeddings.dtype == weight.dtype and embeddings.dtype in (torch.float16, torch.bfloat16):
        return embeddings.dtype
    return None


def margin_loss(
    embeddings: Tensor,
    weight: Tensor,
    labels: Tensor,
    margin: Margin,
    scale: float = 64.0,
    *,
    reduction: Reduction = "mean",
    backend: str = "auto",
    rows_per_chunk: int | None = None,
    validate: bool = True,
    sub_centers: int = 1,
) -> Tensor:
    """Softmax cross-entropy over ``scale * cos(theta)`` with ``margin`` giving the target logit.

    Args:
        embeddings: ``(N, D)`` float embeddings (need not be normalised).
        weight: ``(D, C * sub_centers)`` class centres (need not be normalised).
        labels: ``(N,)`` integer class indices in ``[0, C)``.
        margin: the target-logit margin, any :class:`~arcloss.margins.Margin`.
        scale: the logit scale ``s`` (> 0).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per-row losses, ``(N,)``).
        backend: ``"auto"`` or an engine name (``"torch"``, ``"triton"``); see :mod:`arcloss.ops.registry`.
        rows_per_chunk: rows per chunk; default from a memory budget of ``max(16 MiB, 0.2 * bytes of W)``.
        validate: check label range and finite embeddings (one device sync, also under ``torch.compile``);
            shapes and dtypes are always checked.
        sub_centers: K sub-centres per class (sub-centre ArcFace): class c owns columns ``c*K .. c*K+K-1``;
            a class's cosine is the max over its sub-centres.

    Returns:
        The loss: a scalar, or ``(N,)`` for ``reduction="none"``; float32 for float32/16 inputs, float64 for
        float64 ones.
    """
    sub_centers = check_size("sub_centers", sub_centers)
    weight = check_weight(weight, sub_centers)
    embeddings, labels = check_inputs(embeddings, labels, weight.shape[0], weight.device)
    return fused_margin_loss(
        embeddings,
        weight,
        labels,
        labels,
        margin,
        scale,
        reduction=reduction,
        backend=backend,
        rows_per_chunk=rows_per_chunk,
        validate=validate,
        sub_centers=sub_centers,
        num_classes=weight.shape[1] // sub_centers,
    )


def fused_margin_loss(
    embeddings: Tensor,
    weight: Tensor,
    labels: Tensor,
    local_labels: Tensor,
    margin: Margin,
    scale: float,
    *,
    reduction: Reduction,
    backend: str,
    rows_per_chunk: int | None,
    validate: bool,
    sub_centers: int,
    num_classes: int,
    shard: ShardSpec | None = None,
    norm_source: Tensor | None = None,
) -> Tensor:
    """The one pipeline behind every loss, single-process and sharded (shapes already checked).

    ``labels`` are global classes, ``local_labels`` the classes among ``weight``'s columns (-1: another
    shard's); ``norm_source`` (default ``embeddings``) is where the feature norms are taken from, so that a
    sharded loss can route their gradient without summing it over ranks. A margin's per-row term of the norms
    (:meth:`~arcloss.margins.Margin.row_loss`, e.g. MagFace's regulariser) is added to the rows' losses before
    the reduction.
    """
    if not isinstance(margin, Margin):
        raise TypeError(f"margin must be an arcloss.margins.Margin, got {type(margin).__name__}")
    scale = check_scale(scale)
    check_choice("reduction", reduction, REDUCTIONS)
    rows_per_chunk = check_rows_per_chunk(rows_per_chunk)
    draft = Plan("", matmul_dtype(embeddings, weight), rows_per_chunk, sub_centers, shard)
    plan = dataclasses.replace(draft, engine=ops.resolve(backend, embeddings, weight, draft))
    acc = accumulation_dtype(embeddings.dtype, weight.dtype)
    if embeddings.shape[0] == 0:
        # A finite zero that still connects both inputs to the graph (a mean over nothing would be NaN).
        zero = (embeddings.sum(dim=1) + weight[:0].sum()).to(acc)
        return zero if reduction == "none" else zero.sum()
    with torch.autocast(embeddings.device.type, enabled=False):
        shard_name = "" if shard is None else shard.group_name
        with torch.no_grad():  # the engines carry the gradient through the cosine (by the slope)
            cos = target_cosines_op(
                embeddings, weight, labels, local_labels, num_classes, sub_centers, bool(validate), shard_name
            )
        source = embeddings if norm_source is None else norm_source
        norm = torch.linalg.vector_norm(source.to(acc), dim=1)
        phi, dphi = margin(cos, norm)
        loss = MarginCrossEntropy.apply(
            embeddings, weight, local_labels, scale * phi, (scale * dphi).detach(), scale, reduction, plan
        )
        extra = margin.row_loss(norm)
        if extra is None:
            return loss
        # A per-row term of the norms (Margin.row_loss), reduced as the cross-entropy is.
        return loss + (extra if reduction == "none" else extra.mean() if reduction == "mean" else extra.sum())


def arcface_loss(
    embeddings: Tensor,
    weight: Tensor,
    labels: Tensor,
    margin: float = 28.6,
    scale: float = 64.0,
    *,
    easy_margin: bool = False,
    reduction: Reduction = "mean",
    backend: str = "auto",
    rows_per_chunk: int | None = None,
    validate: bool = True,
    sub_centers: int = 1,
) -> Tensor:
    """ArcFace: target logit ``s * cos(theta_y + m)``, ``m`` in degrees (28.6 ~ 0.5 rad).

    Beyond ``theta_y > 180 - m`` the target logit is ``s * (cos(theta_y) - m * sin(m))`` (``m`` in radians),
    as in insightface and pytorch-metric-learning; with ``easy_margin`` the margin applies only where
    ``cos(theta_y) > 0``. Other arguments as :func:`margin_loss` (``sub_centers`` gives sub-centre ArcFace).
    """
    return margin_loss(
        embeddings,
        weight,
        labels,
        AngularMargin.arcface(margin, easy_margin),
        scale,
        reduction=reduction,
        backend=backend,
        rows_per_chunk=rows_per_chunk,
        validate=validate,
        sub_centers=sub_centers,
    )


def cosface_loss(
    embeddings: Tensor,
    weight: Tensor,
    labels: Tensor,
    margin: float = 0.35,
    scale: float = 64.0,
    *,
    easy_margin: bool = False,
    reduction: Reduction = "mean",
    backend: str = "auto",
    rows_per_chunk: int | None = None,
    validate: bool = True,
) -> Tensor:
    """CosFace: target logit ``s * (cos(theta_y) - m)``, ``m`` a cosine margin (dimensionless, >= 0).
    Other arguments as :func:`margin_loss`."""
    return margin_loss(
        embeddings,
        weight,
        labels,
        AngularMargin.cosface(margin, easy_margin),
        scale,
        reduction=reduction,
        backend=backend,
        rows_per_chunk=rows_per_chunk,
        validate=validate,
    )


def combined_margin_loss(
    embeddings: Tensor,
    weight: Tensor,
    labels: Tensor,
    m1: float = 1.0,
    m2: float = 28.6,
    m3: float = 0.0,
    scale: float = 64.0,
    *,
    easy_margin: bool = False,
    reduction: Reduction = "mean",
    backend: str = "auto",
    rows_per_chunk: int | None = None,
    validate: bool = True,
    sub_centers: int = 1,
) -> Tensor:
    """insightface's combined margin ``s * (cos(m1 * theta_y + m2) - m3)``; ``m2`` in degrees.
    Other arguments as :func:`margin_loss`."""
    return margin_loss(
        embeddings,
        weight,
        labels,
        AngularMargin(m1, m2, m3, easy_margin),
        scale,
        reduction=reduction,
        backend=backend,
        rows_per_chunk=rows_per_chunk,
        validate=validate,
        sub_centers=sub_centers,
    )


def cosine_logits(embeddings: Tensor, weight: Tensor, scale: float) -> Tensor:
    """``scale * cos(theta)`` for all classes, ``(N, C)``, without margin (pytorch-metric-learning's
    ``get_logits``). Differentiable; materialises the full logits, as it must."""
    x = torch.nn.functional.normalize(embeddings, dim=1)
    w = torch.nn.functional.normalize(weight.to(x.dtype), dim=0)
    return x @ w * scale
