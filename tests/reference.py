"""An independent float64 reference of the angular-margin losses, written from the papers' equations.

Plain code on purpose: ``acos`` to get the angle, the margin on the angle, ``logsumexp`` over classes. It
is never edited to match the implementation under test. (Its gradient is NaN at cos = +-1, like every
``acos`` implementation; tests compare gradients away from those points.)

    L_i = -log( e^{s phi(theta_yi)} / (e^{s phi(theta_yi)} + sum_{j != yi} e^{s cos theta_j}) )
    ArcFace:  phi = cos(theta + m)           if theta <= pi - m, else cos(theta) - m sin(m)
    combined: phi = cos(m1 theta + m2) - m3
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def cosines(x: Tensor, w: Tensor) -> Tensor:
    """``(N, C)`` cosines between rows of ``x`` ``(N, D)`` and columns of ``w`` ``(D, C)``, float64."""
    x = x.double()
    w = w.double()
    return (x / x.norm(dim=1, keepdim=True)) @ (w / w.norm(dim=0, keepdim=True))


def arcface_phi(theta: Tensor, margin_rad: float) -> Tensor:
    return torch.where(
        theta <= math.pi - margin_rad,
        torch.cos(theta + margin_rad),
        torch.cos(theta) - margin_rad * math.sin(margin_rad),
    )


def margin_softmax_loss(cos: Tensor, labels: Tensor, target_phi: Tensor, scale: float, reduction: str) -> Tensor:
    logits = scale * cos
    rows = torch.arange(len(labels))
    logits = logits.clone()
    logits[rows, labels] = scale * target_phi
    losses = torch.logsumexp(logits, dim=1) - logits[rows, labels]
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


def arcface_loss(
    x: Tensor, w: Tensor, labels: Tensor, margin_deg: float, scale: float, reduction: str = "mean"
) -> Tensor:
    cos = cosines(x, w)
    theta = torch.acos(cos[torch.arange(len(labels)), labels].clamp(-1, 1))
    return margin_softmax_loss(cos, labels, arcface_phi(theta, math.radians(margin_deg)), scale, reduction)


def cosface_loss(x: Tensor, w: Tensor, labels: Tensor, margin: float, scale: float, reduction: str = "mean") -> Tensor:
    cos = cosines(x, w)
    target = cos[torch.arange(len(labels)), labels]
    return margin_softmax_loss(cos, labels, target - margin, scale, reduction)
