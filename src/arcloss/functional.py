"""Functional API: the losses as functions of embeddings, class centres and labels.

All functions take ``embeddings`` ``(N, D)``, ``weight`` ``(D, C)`` (pytorch-metric-learning's layout) and
``labels`` ``(N,)``; angular margins are in **degrees**. They validate their inputs, pick the backend, keep
the margin and softmax math in float32 under autocast, and never change the dtype of ``weight``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import _backends
from ._autograd import MarginCrossEntropy
from ._fused import accumulation_dtype
from ._validation import (
    check_angle_degrees,
    check_choice,
    check_cosine_margin,
    check_inputs,
    check_real,
    check_scale,
    check_size,
)
from .margins import AngularMargin

__all__ = ["arcface_loss", "combined_margin_loss", "cosface_loss", "cosine_logits", "margin_loss"]

REDUCTIONS = ("mean", "sum", "none")


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


def _matmul_dtype(embeddings: Tensor, weight: Tensor) -> torch.dtype | None:
    """The GEMM dtype: the autocast dtype, else a reduced dtype both operands already share, else None
    (the float32/float64 accumulation dtype)."""
    autocast = _autocast_dtype(embeddings.device)
    if autocast is not None:
        return autocast
    if embeddings.dtype == weight.dtype and embeddings.dtype in (torch.float16, torch.bfloat16):
        return embeddings.dtype
    return None


def margin_loss(
    embeddings: Tensor,
    weight: Tensor,
    labels: Tensor,
    margin: AngularMargin,
    scale: float,
    *,
    reduction: str = "mean",
    backend: str = "auto",
    rows_per_chunk: int | None = None,
    validate: bool = True,
    sub_centers: int = 1,
) -> Tensor:
    """Softmax cross-entropy over ``scale * cos(theta)`` with ``margin`` applied to the target logit.

    Args:
        embeddings: ``(N, D)`` float embeddings (need not be normalised).
        weight: ``(D, C)`` class centres (need not be normalised).
        labels: ``(N,)`` integer class indices in ``[0, C)``.
        margin: the target-logit margin (angles in radians inside :class:`AngularMargin`).
        scale: the logit scale ``s`` (> 0).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per-row losses, ``(N,)``).
        backend: ``"auto"`` | ``"torch"`` | ``"triton"``.
        rows_per_chunk: rows per chunk; default from a memory budget of ``max(16 MiB, 0.25 * bytes of W)``.
        validate: check label range and finite embeddings (one device sync); shapes and dtypes are always
            checked.
        sub_centers: K sub-centres per class (sub-centre ArcFace): ``weight`` is ``(D, C * K)``, class c owning
            columns ``c*K .. c*K+K-1``; a class's cosine is the max over its sub-centres.

    Returns:
        The loss: a scalar, or ``(N,)`` for ``reduction="none"``; float32 for float32/16 inputs, float64 for
        float64 ones.
    """
    if not isinstance(margin, AngularMargin):
        raise TypeError(f"margin must be an AngularMargin, got {type(margin).__name__}")
    scale = check_scale(scale)
    check_choice("reduction", reduction, REDUCTIONS)
    if not isinstance(weight, Tensor) or not weight.is_floating_point() or weight.dim() != 2:
        raise TypeError("weight must be a 2-D floating-point tensor of shape (embedding_size, num_classes)")
    if rows_per_chunk is not None and (
        isinstance(rows_per_chunk, bool) or not isinstance(rows_per_chunk, int) or rows_per_chunk < 1
    ):
        raise ValueError(f"rows_per_chunk must be a positive int or None, got {rows_per_chunk!r}")
    sub_centers = check_size("sub_centers", sub_centers)
    if weight.shape[1] % sub_centers:
        raise ValueError(f"weight has {weight.shape[1]} columns, not a multiple of sub_centers={sub_centers}")
    embeddings, labels = check_inputs(embeddings, labels, weight, check_values=validate, sub_centers=sub_centers)
    name = _backends.resolve(backend, embeddings.device)
    if embeddings.shape[0] == 0:
        # A finite zero that still connects both inputs to the graph (a mean over nothing would be NaN).
        zero = embeddings.sum(dim=1) + weight[:0].sum()
        return zero if reduction == "none" else zero.sum().to(accumulation_dtype(embeddings.dtype, weight.dtype))
    matmul_dtype = _matmul_dtype(embeddings, weight)
    with torch.autocast(embeddings.device.type, enabled=False):
        options = (matmul_dtype, rows_per_chunk or 0, name, sub_centers)
        return MarginCrossEntropy.apply(embeddings, weight, labels, margin, scale, reduction, options)


def arcface_loss(
    embeddings: Tensor,
    weight: Tensor,
    labels: Tensor,
    margin: float = 28.6,
    scale: float = 64.0,
    easy_margin: bool = False,
    **kwargs,
) -> Tensor:
    """ArcFace: target logit ``s * cos(theta_y + m)``, ``m`` in degrees (28.6 ~ 0.5 rad).

    Beyond ``theta_y > 180 - m`` the target logit is ``s * (cos(theta_y) - m * sin(m))`` (``m`` in radians),
    as in insightface and pytorch-metric-learning; with ``easy_margin`` the margin applies only where
    ``cos(theta_y) > 0``. Keyword arguments as :func:`margin_loss` (``sub_centers`` gives sub-centre ArcFace).
    """
    margin_rad = math.radians(check_angle_degrees("margin", margin))
    spec = AngularMargin(m2=margin_rad, easy_margin=bool(easy_margin))
    return margin_loss(embeddings, weight, labels, spec, scale, **kwargs)


def cosface_loss(
    embeddings: Tensor,
    weight: Tensor,
    labels: Tensor,
    margin: float = 0.35,
    scale: float = 64.0,
    easy_margin: bool = False,
    **kwargs,
) -> Tensor:
    """CosFace: target logit ``s * (cos(theta_y) - m)``, ``m`` a cosine margin (dimensionless, >= 0)."""
    m3 = check_cosine_margin("margin", margin)
    return margin_loss(embeddings, weight, labels, AngularMargin(m3=m3, easy_margin=bool(easy_margin)), scale, **kwargs)


def combined_margin_loss(
    embeddings: Tensor,
    weight: Tensor,
    labels: Tensor,
    m1: float = 1.0,
    m2: float = 28.6,
    m3: float = 0.0,
    scale: float = 64.0,
    easy_margin: bool = False,
    **kwargs,
) -> Tensor:
    """insightface's combined margin ``s * (cos(m1 * theta_y + m2) - m3)``; ``m2`` in degrees."""
    margin = AngularMargin(
        check_real("m1", m1), math.radians(check_angle_degrees("m2", m2)), check_real("m3", m3), bool(easy_margin)
    )
    return margin_loss(embeddings, weight, labels, margin, scale, **kwargs)


def cosine_logits(embeddings: Tensor, weight: Tensor, scale: float) -> Tensor:
    """``scale * cos(theta)`` for all classes, ``(N, C)``, without margin (pytorch-metric-learning's
    ``get_logits``). Differentiable; materialises the full logits, as it must."""
    x = torch.nn.functional.normalize(embeddings, dim=1)
    w = torch.nn.functional.normalize(weight.to(x.dtype), dim=0)
    return x @ w * scale
