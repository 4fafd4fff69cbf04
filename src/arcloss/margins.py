"""Target-logit margins: the one place where the angular-margin family differs.

Every loss in arcloss is a softmax cross-entropy over ``s * cos(theta_j)`` in which the target class's
logit is replaced by ``s * phi(cos(theta_y))``. A margin is the function ``phi`` and its derivative
``dphi/dcos``; the fused pipeline in :mod:`arcloss._fused` needs nothing else.

``AngularMargin(m1, m2, m3)`` is insightface's combined margin ``phi = cos(m1 * theta + m2) - m3``:

- ArcFace: ``(1, m, 0)``, CosFace: ``(1, 0, m)``, SphereFace-style: ``m1 > 1``.
- ``m2`` is in **radians** here; the public modules take angular margins in degrees and convert.
- Beyond the angle where ``m1 * theta + m2`` reaches pi, ``cos(m1 * theta + m2)`` would start to *increase*
  with theta. There the target logit falls back to a line in ``cos(theta)`` that keeps the loss monotone:
  for ``m1 == 1`` it is insightface's and pytorch-metric-learning's ``cos(theta) - m2 * sin(m2) - m3``
  (kept exactly, for checkpoint and loss parity); for ``m1 != 1`` it is ``cos(theta)`` shifted to meet the
  margin curve at the threshold, ``cos(theta) - (1 + cos(theta_t)) - m3`` with ``theta_t = (pi - m2) / m1``.
- ``easy_margin`` applies the margin only where ``cos(theta) > 0`` (elsewhere ``phi = cos(theta)``).

For ``m1 == 1`` no ``acos`` is evaluated: ``cos(theta + m) = c * cos(m) - sqrt(1 - c^2) * sin(m)``. The
derivative ``dphi/dc = cos(m) + c * sin(m) / sin(theta)`` is infinite at ``c = 1``; its product with
``dc/dx`` (whose size is ``sin(theta)``) is not. In floating point ``sin(theta)`` computed from ``c`` is
pure rounding noise below ``sqrt(eps)``, so it is clamped there: the gradient stays finite everywhere
and is exact wherever ``sin(theta)`` carries any information.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["AngularMargin"]


@dataclass(frozen=True)
class AngularMargin:
    """The combined angular margin ``phi(theta) = cos(m1 * theta + m2) - m3``.

    Args:
        m1: multiplicative angular margin (dimensionless, > 0). 1 for ArcFace and CosFace.
        m2: additive angular margin in radians, in ``[0, pi)``.
        m3: additive cosine margin (dimensionless, >= 0).
        easy_margin: apply the margin only where ``cos(theta) > 0``.
    """

    m1: float = 1.0
    m2: float = 0.0
    m3: float = 0.0
    easy_margin: bool = False

    def __post_init__(self) -> None:
        for name in ("m1", "m2", "m3"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a real number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        if self.m1 <= 0:
            raise ValueError(f"m1 must be > 0, got {self.m1!r}")
        if not 0 <= self.m2 < math.pi:
            raise ValueError(f"m2 must be in [0, pi) radians, got {self.m2!r}")
        if self.m3 < 0:
            raise ValueError(f"m3 must be >= 0, got {self.m3!r}")

    @property
    def threshold_angle(self) -> float:
        """Angle (radians) past which the fallback applies: where ``m1 * theta + m2`` reaches pi."""
        return (math.pi - self.m2) / self.m1

    @property
    def fallback_shift(self) -> float:
        """The constant ``delta`` of the fallback ``phi = cos(theta) - delta - m3``."""
        if self.m1 == 1.0:
            return self.m2 * math.sin(self.m2)
        return 1.0 + math.cos(min(self.threshold_angle, math.pi))

    def __call__(self, cos: Tensor) -> tuple[Tensor, Tensor]:
        """Target logit (unscaled) and its derivative.

        Args:
            cos: ``(K,)`` cosines of the target classes, any float dtype (computed in that dtype).

        Returns:
            ``(phi, dphi_dcos)``, each ``(K,)`` in ``cos.dtype``.
        """
        c = cos.clamp(-1.0, 1.0)
        sin_floor = math.sqrt(torch.finfo(c.dtype).eps)
        sin_theta = torch.sqrt((1.0 - c * c).clamp_min(0.0))
        sin_safe = sin_theta.clamp_min(sin_floor)
        if self.m1 == 1.0:
            cos_m, sin_m = math.cos(self.m2), math.sin(self.m2)
            phi = c * cos_m - sin_theta * sin_m
            dphi = cos_m + c * (sin_m / sin_safe) if self.m2 else torch.ones_like(c)
        else:
            theta = torch.acos(c)
            angle = self.m1 * theta + self.m2
            phi = torch.cos(angle)
            dphi = self.m1 * torch.sin(angle) / sin_safe
        phi = phi - self.m3
        threshold = self.threshold_angle
        if threshold < math.pi:
            past = c < math.cos(threshold)
            phi = torch.where(past, c - self.fallback_shift - self.m3, phi)
            dphi = torch.where(past, torch.ones_like(dphi), dphi)
        if self.easy_margin:
            easy = c <= 0
            phi = torch.where(easy, c, phi)
            dphi = torch.where(easy, torch.ones_like(dphi), dphi)
        return phi, dphi
