"""Independent references of AdaFace and MagFace, written from the papers' equations as their official heads
compute them (mk-minchul/AdaFace ``head.py``; IrvingMeng/MagFace ``MagLinear`` + ``MagLoss``), with full logits
and plain autograd through everything. Never edited to match the implementation under test.

They compute in the dtype of their inputs (tests pass float64; the autocast test passes float32 under autocast,
i.e. plain torch). Margins are in radians here, as in the papers.

AdaFace, per row i (target y_i), with n_i = clip(|x_i|, 0.001, 100) detached and the running statistics (mu, sigma):

    z_i     = clip(h (n_i - mu) / (sigma + 1e-3), -1, 1)
    c_ij    = clip(cos theta_ij, -1 + 1e-3, 1 - 1e-3)                  (every class, as the official head)
    logit   = s cos(clip(acos(c_iy) - m z_i, 1e-3, pi - 1e-3)) - s m (1 + z_i)   on the target,
              s cos(clip(acos(c_ij), 1e-3, pi - 1e-3))                            elsewhere
    stats   : mu <- t mean(n) + (1 - t) mu, sigma <- t std_unbiased(n) + (1 - t) sigma, before the logits

MagFace, per row, a_i = clamp(|x_i|, l_a, u_a) (differentiable), m(a) = (u_m - l_m)/(u_a - l_a) (a - l_a) + l_m:

    logit   = s cos(theta_iy + m(a_i)) on the target (easy margin: where cos theta_iy > 0, else s cos theta_iy;
              without: where cos theta_iy > cos(pi - m), else s (cos theta_iy - m sin m)), s cos theta_ij elsewhere
    L_i     = CE_i + lambda_g (a_i / u_a^2 + 1 / a_i)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

EPS = 1e-3


def _reduce(losses: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


def _cosines(x: Tensor, w: Tensor) -> Tensor:
    x_unit = x / torch.sqrt((x * x).sum(dim=1, keepdim=True))
    w_unit = w / torch.sqrt((w * w).sum(dim=0, keepdim=True))
    return x_unit @ w_unit


def adaface_statistics(norm_batches: list[Tensor], t_alpha: float, mean: float = 20.0, std: float = 100.0):
    """The running (mean, std) after each batch of norms, from the initial (20, 100)."""
    out = []
    for norms in norm_batches:
        n = norms.detach().clamp(0.001, 100.0)
        mean = t_alpha * float(n.mean()) + (1 - t_alpha) * mean
        std = t_alpha * float(n.std(unbiased=True)) + (1 - t_alpha) * std
        out.append((mean, std))
    return out


def adaface_logits(
    x: Tensor,
    w: Tensor,
    labels: Tensor,
    m: float,
    h: float,
    s: float,
    mean: float,
    std: float,
    clamp_non_target: bool = True,
) -> Tensor:
    """The official head's logits ``(N, C)`` with the given running statistics (already updated by this batch).

    ``clamp_non_target=False`` leaves the other classes' cosines unclamped (what the fused engines compute)."""
    norms = torch.sqrt((x * x).sum(dim=1)).clamp(0.001, 100.0).detach()
    raw = _cosines(x, w)
    cos = raw.clamp(-1 + EPS, 1 - EPS)
    scaler = (h * (norms - mean) / (std + EPS)).clamp(-1.0, 1.0)
    onehot = torch.zeros_like(cos)
    onehot[torch.arange(len(labels)), labels] = 1.0
    theta = torch.acos(cos)
    theta_m = (theta + onehot * (-m * scaler)[:, None]).clamp(EPS, math.pi - EPS)
    out = torch.cos(theta_m) - onehot * (m + m * scaler)[:, None]
    if not clamp_non_target:
        out = torch.where(onehot.bool(), out, raw)
    return s * out


def adaface_loss(
    x: Tensor,
    w: Tensor,
    labels: Tensor,
    m: float = 0.4,
    h: float = 0.333,
    s: float = 64.0,
    mean: float = 20.0,
    std: float = 100.0,
    reduction: str = "mean",
    clamp_non_target: bool = True,
) -> Tensor:
    logits = adaface_logits(x, w, labels, m, h, s, mean, std, clamp_non_target)
    return _reduce(torch.nn.functional.cross_entropy(logits, labels, reduction="none"), reduction)


def magface_loss(
    x: Tensor,
    w: Tensor,
    labels: Tensor,
    s: float = 64.0,
    l_a: float = 10.0,
    u_a: float = 110.0,
    l_m: float = 0.45,
    u_m: float = 0.8,
    lambda_g: float = 35.0,
    easy_margin: bool = True,
    reduction: str = "mean",
) -> Tensor:
    a = torch.sqrt((x * x).sum(dim=1, keepdim=True)).clamp(l_a, u_a)
    margin = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m
    cos = _cosines(x, w).clamp(-1, 1)
    sin = torch.sqrt(1.0 - cos * cos)
    cos_m = cos * torch.cos(margin) - sin * torch.sin(margin)
    if easy_margin:
        cos_m = torch.where(cos > 0, cos_m, cos)
    else:
        cos_m = torch.where(cos > torch.cos(math.pi - margin), cos_m, cos - torch.sin(math.pi - margin) * margin)
    onehot = torch.zeros_like(cos)
    onehot[torch.arange(len(labels)), labels] = 1.0
    logits = s * (onehot * cos_m + (1 - onehot) * cos)
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    g = a[:, 0] / u_a**2 + 1.0 / a[:, 0]
    return _reduce(ce + lambda_g * g, reduction)
