"""Quality-adaptive margins: the margin of each row follows its feature norm ``|x_i|``, read as image quality.

Both are :class:`~arcloss.margins.Margin` modules, so every engine, ``torch.compile``, autocast and sharding run
them unchanged (:class:`arcloss.AdaFaceLoss`, :class:`arcloss.MagFaceLoss` wrap them with class centres).

**AdaFace** (Kim et al., CVPR 2022, arXiv 2204.00964; the official head ``head.py`` of mk-minchul/AdaFace).
With ``c`` the target cosine and ``n = clip(|x|, 0.001, 100)`` (detached: no gradient reaches the norm),

    mu, sigma  <- t_alpha * (mean(n), std(n)) + (1 - t_alpha) * (mu, sigma)   (training mode; unbiased std)
    z          =  clip(h * (n - mu) / (sigma + 1e-3), -1, 1)                  (the margin scaler)
    c'         =  clip(c, -1 + 1e-3, 1 - 1e-3),  theta = acos(c')
    phi        =  cos(clip(theta - m * z, 1e-3, pi - 1e-3)) - m * (1 + z)

``m`` (default 0.4) is dimensionless: the paper uses the same number as an angle in **radians** (the angular
part ``g_angle = -m z``) and as a **cosine** offset (the additive part ``g_add = m z + m``), so it is not in
degrees like ArcFace's margin here. High-norm rows (``z -> 1``) get ``cos(theta - m) - 2m`` (the angle reduced by
``m``, a CosFace margin ``2m``); low-norm rows (``z -> -1``) ArcFace's ``cos(theta + m)``; ``z = 0`` CosFace's
``cos(theta) - m``.

The running statistics are buffers (``batch_mean``, ``batch_std``, initial 20 and 100), so checkpoints carry
them. As in the official head the batch's statistics enter the running ones *before* this batch's scaler is
computed. Unlike it, they are updated in training mode only (the official head also updates them in eval
mode), and a batch of one row leaves the standard deviation unchanged (its unbiased estimate is undefined; the
official head would store NaN). Sharded, every rank sees the same global batch of norms, so the statistics stay
identical on every rank.

One difference is inherent to the fused engines: the official head clamps *every* cosine to
``±(1 - 1e-3)``, the engines apply the margin to the target logit only and use ``s cos(theta_j)`` unclamped for
the other classes. The two losses differ only for rows with a non-target cosine beyond ``±(1 - 1e-3)``
(an embedding within 2.6° of another class's centre).

**MagFace** (Meng et al., CVPR 2021, arXiv 2103.06627; ``MagLinear``/``MagLoss`` in IrvingMeng/MagFace).
With ``a = clamp(|x|, l_a, u_a)`` (differentiable), a margin linear in ``a``,

    m(a)  = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m                    (radians; given here in degrees)
    phi   = cos(theta + m(a))    (easy margin, the default: only where cos(theta) > 0, else cos(theta))
    L_i   = CE_i(s * logits with phi on the target) + lambda_g * (a / u_a^2 + 1 / a)

Without easy margin the target logit past ``theta > pi - m(a)`` is ``cos(theta) - m(a) sin(m(a))`` (ArcFace's
fallback, per row). The gradient reaches the norm through ``m(a)`` in the target logit and through the
regulariser ``g(a) = a / u_a^2 + 1 / a`` (:meth:`MagFaceMargin.row_loss`), which pushes ``a`` up towards
``u_a`` (its minimum) unless the classification term holds it back: the norm of a feature grows with how easy
it is to classify, and is the quality score.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from ._validation import check_angle_degrees, check_bool, check_fraction, check_nonnegative, check_positive
from .margins import CheckedMargin, checked_attribute

__all__ = ["AdaFaceMargin", "MagFaceMargin"]

_EPS = 1e-3  # AdaFace's cosine clamp, angle clip and std offset; its norm floor is the same number


class AdaFaceMargin(CheckedMargin):
    """AdaFace's norm-adaptive margin (see the module docstring for the equations and the official head).

    Args:
        m: the margin, dimensionless (used as radians in the angular part and as a cosine offset), >= 0.
        h: the concentration of the scaler, ``z = clip(h (n - mu) / (sigma + 1e-3), -1, 1)``, >= 0.
        t_alpha: momentum of the running mean/std of the norms, in ``[0, 1]`` (1: this batch's statistics only).
        dtype, device: of the ``batch_mean``/``batch_std`` buffers (float32 unless float64 is asked for).

    Buffers:
        batch_mean, batch_std: ``(1,)`` running mean and (unbiased) standard deviation of the clipped norms.
    """

    _checks: ClassVar[dict[str, Callable[[str, object], object]]] = {
        "m": check_nonnegative,
        "h": check_nonnegative,
        "t_alpha": check_fraction,
    }
    m = checked_attribute(
        "m", "The margin (dimensionless: radians in the angular part, a cosine offset in the additive one)."
    )
    h = checked_attribute("h", "Concentration of the margin scaler.")
    t_alpha = checked_attribute("t_alpha", "Momentum of the running norm statistics.")
    batch_mean: Tensor
    batch_std: Tensor

    def __init__(
        self,
        m: float = 0.4,
        h: float = 0.333,
        t_alpha: float = 0.01,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.m, self.h, self.t_alpha = m, h, t_alpha
        dtype = torch.float64 if dtype == torch.float64 else torch.float32
        # Shape (1,) as the official head's (and: torch.compile drops in-place updates of 0-dim buffers).
        self.register_buffer("batch_mean", torch.full((1,), 20.0, dtype=dtype, device=device))
        self.register_buffer("batch_std", torch.full((1,), 100.0, dtype=dtype, device=device))

    def margin_scaler(self, norm: Tensor) -> Tensor:
        """``z = clip(h (clip(|x|, 0.001, 100) - mu) / (sigma + 1e-3), -1, 1)`` with the current running
        statistics (no update), detached, in ``norm.dtype``."""
        safe = norm.detach().clamp(_EPS, 100.0)
        mean, std = self.batch_mean.to(safe.dtype), self.batch_std.to(safe.dtype)
        return (self.h * (safe - mean) / (std + _EPS)).clamp(-1.0, 1.0)

    @torch.no_grad()
    def update_statistics(self, norm: Tensor) -> None:
        """Fold this batch's clipped norms into the running mean and (unbiased; needs 2 rows) std."""
        safe = norm.detach().clamp(_EPS, 100.0)
        alpha = self.t_alpha
        mean = alpha * safe.mean() + (1.0 - alpha) * self.batch_mean.to(safe.dtype)
        self.batch_mean.copy_(mean)
        if safe.shape[0] > 1:
            std = alpha * safe.std() + (1.0 - alpha) * self.batch_std.to(safe.dtype)
            self.batch_std.copy_(std)

    def forward(self, cos: Tensor, norm: Tensor) -> tuple[Tensor, Tensor]:
        """Target logit (unscaled) and its derivative; updates the running statistics in training mode."""
        if self.training:
            self.update_statistics(norm)
        z = self.margin_scaler(norm).to(cos.dtype)
        m = self.m
        g_angle = -m * z
        g_add = m + m * z
        c_raw = cos.detach()
        c = c_raw.clamp(-1.0 + _EPS, 1.0 - _EPS)
        inside = (c_raw >= -1.0 + _EPS) & (c_raw <= 1.0 - _EPS)  # where the clamp passes the gradient
        sin_theta = torch.sqrt(1.0 - c * c)  # >= sqrt(2e-3 - 1e-6) ~ 0.045: no singularity
        cos_g, sin_g = torch.cos(g_angle), torch.sin(g_angle)
        angle = torch.acos(c) + g_angle
        low, high = angle < _EPS, angle > math.pi - _EPS
        # cos(theta + g) without acos round-off; the clipped ends are constants in c.
        phi = torch.where(low, math.cos(_EPS), torch.where(high, -math.cos(_EPS), c * cos_g - sin_theta * sin_g))
        dphi = torch.where(inside & ~low & ~high, cos_g + c * sin_g / sin_theta, torch.zeros_like(c))
        return phi - g_add, dphi

    def extra_repr(self) -> str:
        return f"m={self.m:g}, h={self.h:g}, t_alpha={self.t_alpha:g}"


class MagFaceMargin(CheckedMargin):
    """MagFace's magnitude-aware margin and regulariser (see the module docstring).

    Args:
        l_a, u_a: the norm range ``[l_a, u_a]`` the norm is clamped to (``0 < l_a < u_a``).
        l_margin, u_margin: the angular margins at ``l_a`` and ``u_a``, in **degrees** (``[0, 180)``).
        lambda_g: weight of the regulariser ``g(a) = a / u_a^2 + 1 / a`` (>= 0).
        easy_margin: apply the margin only where ``cos(theta) > 0`` (the official ``MagLinear``'s default).
    """

    _checks: ClassVar[dict[str, Callable[[str, object], object]]] = {
        "l_a": check_positive,
        "u_a": check_positive,
        "l_margin": check_angle_degrees,
        "u_margin": check_angle_degrees,
        "lambda_g": check_nonnegative,
        "easy_margin": check_bool,
    }
    _l_a: float
    _u_a: float
    l_a = checked_attribute("l_a", "Lower end of the norm range.")
    u_a = checked_attribute("u_a", "Upper end of the norm range.")
    l_margin = checked_attribute("l_margin", "Angular margin at the lower end of the norm range, degrees.")
    u_margin = checked_attribute("u_margin", "Angular margin at the upper end of the norm range, degrees.")
    lambda_g = checked_attribute("lambda_g", "Weight of the norm regulariser.")
    easy_margin = checked_attribute("easy_margin", "Margin only where cos(theta) > 0.")

    def __init__(
        self,
        l_a: float = 10.0,
        u_a: float = 110.0,
        l_margin: float = math.degrees(0.45),
        u_margin: float = math.degrees(0.8),
        lambda_g: float = 35.0,
        easy_margin: bool = True,
    ) -> None:
        super().__init__()
        self._ready = False
        self.l_a, self.u_a, self.l_margin, self.u_margin = l_a, u_a, l_margin, u_margin
        self.lambda_g, self.easy_margin = lambda_g, easy_margin
        self._ready = True
        self._validate_together("l_a")

    def _validate_together(self, label: str) -> None:
        if getattr(self, "_ready", False) and not self._l_a < self._u_a:
            raise ValueError(f"l_a must be < u_a, got l_a={self._l_a!r}, u_a={self._u_a!r} (setting {label})")

    def clamped_norm(self, norm: Tensor) -> Tensor:
        """``a = clamp(|x|, l_a, u_a)``, differentiable (zero gradient outside the range)."""
        return norm.clamp(self.l_a, self.u_a)

    def margin_of(self, norm: Tensor) -> Tensor:
        """The per-row angular margin ``m(a)`` in **radians**, differentiable in ``norm``."""
        l_m, u_m = math.radians(self.l_margin), math.radians(self.u_margin)
        return (u_m - l_m) / (self.u_a - self.l_a) * (self.clamped_norm(norm) - self.l_a) + l_m

    def forward(self, cos: Tensor, norm: Tensor) -> tuple[Tensor, Tensor]:
        """Target logit ``cos(theta + m(a))`` (differentiable in ``norm``) and its derivative in ``cos``."""
        c = cos.detach().clamp(-1.0, 1.0)
        margin = self.margin_of(norm.to(c.dtype))
        cos_m, sin_m = torch.cos(margin), torch.sin(margin)
        sin_theta = torch.sqrt((1.0 - c * c).clamp_min(0.0))
        sin_safe = sin_theta.clamp_min(math.sqrt(torch.finfo(c.dtype).eps))  # as AngularMargin, see margins.py
        phi = c * cos_m - sin_theta * sin_m
        dphi = (cos_m + c * sin_m / sin_safe).detach()
        ones = torch.ones_like(c)
        if self.easy_margin:
            keep = c > 0
            phi = torch.where(keep, phi, c)
        else:
            keep = c > -torch.cos(margin.detach())  # cos(theta) > cos(pi - m): theta + m < pi
            phi = torch.where(keep, phi, c - margin * sin_m)
        return phi, torch.where(keep, dphi, ones)

    def row_loss(self, norm: Tensor) -> Tensor:
        """``lambda_g * g(a)``, ``g(a) = a / u_a^2 + 1 / a``: per row, differentiable in ``norm``."""
        a = self.clamped_norm(norm)
        return self.lambda_g * (a / self.u_a**2 + 1.0 / a)

    def extra_repr(self) -> str:
        return (
            f"l_a={self.l_a:g}, u_a={self.u_a:g}, l_margin={self.l_margin:g}deg, u_margin={self.u_margin:g}deg, "
            f"lambda_g={self.lambda_g:g}, easy_margin={self.easy_margin}"
        )
