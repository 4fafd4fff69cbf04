"""Target-logit margins: the one place where the angular-margin family differs.

Every loss in arcloss is a softmax cross-entropy over ``s * cos(theta_j)`` in which the target class's
logit is replaced by ``s * phi``. A margin is an ``nn.Module`` mapping the target cosines (and, for
quality-adaptive margins, the feature norms) to ``phi`` and its derivative ``dphi/dcos``:

    phi, dphi_dcos = margin(cos, norm)

- ``cos`` ``(N,)``: the target cosines, detached, in the accumulation dtype (float32, or float64), in [-1, 1].
- ``norm`` ``(N,)``: the feature norms ``|x_i|`` in the same dtype. It may carry a gradient: a margin that
  uses it differentiably (MagFace) gets that gradient back into the embeddings through autograd; a margin
  that must not (AdaFace) detaches it.
- ``phi`` ``(N,)``: the unscaled target logit; it may depend on ``norm`` through autograd, never on ``cos``
  through autograd (``cos`` is detached).
- ``dphi_dcos`` ``(N,)``: the derivative at fixed norm, detached. The engines fold it into the gradient of
  the target column, so nothing of the size of ``W`` is spent on the margin's gradient.

A margin may also add a per-row loss term of the norms (:meth:`Margin.row_loss`, MagFace's regulariser);
the quality-adaptive margins themselves (AdaFace, MagFace) are in :mod:`arcloss.adaptive`.

A margin is a module so that it can keep state (buffers saved in checkpoints, ``train()``/``eval()``) and so
that a loss owns exactly one: changing an attribute of the margin (a warm-up schedule, a new ``m2``) takes
effect on the next forward. Angular margins are in **degrees** everywhere in arcloss and converted once,
here.

``AngularMargin(m1, m2, m3)`` is insightface's combined margin ``phi = cos(m1 * theta + m2) - m3``:

- ArcFace: ``(1, m, 0)``, CosFace: ``(1, 0, m)``, SphereFace-style: ``m1 > 1``.
- Beyond the angle where ``m1 * theta + m2`` reaches pi, ``cos(m1 * theta + m2)`` would start to *increase*
  with theta. There the target logit falls back to a line in ``cos(theta)`` that keeps the loss monotone:
  for ``m1 == 1`` it is insightface's and pytorch-metric-learning's ``cos(theta) - m2 * sin(m2) - m3``
  (``m2`` in radians; kept exactly, for checkpoint and loss parity); for ``m1 != 1`` it is ``cos(theta)``
  shifted to meet the margin curve at the threshold, ``cos(theta) - (1 + cos(theta_t)) - m3`` with
  ``theta_t = (pi - m2) / m1``.
- ``easy_margin`` applies the margin only where ``cos(theta) > 0`` (elsewhere ``phi = cos(theta)``).

For ``m1 == 1`` no ``acos`` is evaluated: ``cos(theta + m) = c * cos(m) - sqrt(1 - c^2) * sin(m)``. The
derivative ``dphi/dc = cos(m) + c * sin(m) / sin(theta)`` is infinite at ``c = 1``; its product with
``dc/dx`` (whose size is ``sin(theta)``) is not. In floating point ``sin(theta)`` computed from ``c`` is
pure rounding noise below ``sqrt(eps)``, so it is clamped there: the gradient stays finite everywhere
and is exact wherever ``sin(theta)`` carries any information.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn

from ._validation import check_angle_degrees, check_bool, check_nonnegative, check_positive

__all__ = ["AngularMargin", "CheckedMargin", "Margin", "checked_attribute"]


class Margin(nn.Module):
    """Base class of the margins: ``forward(cos, norm) -> (phi, dphi_dcos)``, see the module docstring.

    Subclass it and implement :meth:`forward` to add a margin: every loss, engine and the sharded path use
    it unchanged (``arcloss.functional.margin_loss(embeddings, W, labels, MyMargin(), scale)``).
    """

    def forward(self, cos: Tensor, norm: Tensor) -> tuple[Tensor, Tensor]:
        """Target logit before scaling and its derivative in ``cos``.

        Args:
            cos: ``(N,)`` target cosines, detached, float32 or float64.
            norm: ``(N,)`` feature norms in ``cos.dtype``; may require grad.

        Returns:
            ``(phi, dphi_dcos)``, each ``(N,)`` in ``cos.dtype``; ``dphi_dcos`` detached.
        """
        raise NotImplementedError

    def row_loss(self, norm: Tensor) -> Tensor | None:
        """An extra per-row loss term computed from the feature norms, or ``None`` (the default: none).

        A margin that regularises the norm (MagFace's ``lambda_g * g(|x|)``) returns an ``(N,)`` tensor in
        ``norm.dtype``; every loss adds it to the rows' cross-entropy before the reduction (``mean``, ``sum``
        or ``none``), single-process and sharded alike. Its gradient reaches the embeddings through ``norm``
        by autograd (sharded: through the replicated norms, so it is not counted once per rank).
        """
        return None

    def set(self, name: str, value: object, *, label: str | None = None) -> None:
        """Set attribute ``name``; a margin that checks its values names ``label`` (the caller's name for
        it, e.g. a loss's ``margin``) in its errors."""
        setattr(self, name, value)


class CheckedMargin(Margin):
    """A margin whose hyper-parameters are checked whenever they are set (directly or through a loss's
    attribute): ``_checks`` maps each name to its check, the value is kept as ``_<name>``, and
    :meth:`_validate_together` checks relations between them; a failed set leaves the margin as it was."""

    _checks: ClassVar[dict[str, Callable[[str, object], object]]] = {}

    def set(self, name: str, value: object, *, label: str | None = None) -> None:
        if name not in self._checks:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        value = self._checks[name](label or name, value)
        previous = getattr(self, "_" + name, None)
        object.__setattr__(self, "_" + name, value)
        try:
            self._validate_together(label or name)
        except ValueError:
            object.__setattr__(self, "_" + name, previous)
            raise

    def _validate_together(self, label: str) -> None:
        """Checks across attributes (run after each set); none by default."""


def checked_attribute(name: str, doc: str) -> property:
    """A :class:`CheckedMargin` attribute: read ``_<name>``, write through :meth:`CheckedMargin.set`."""
    return property(lambda self: getattr(self, "_" + name), lambda self, v: self.set(name, v), doc=doc)


class AngularMargin(CheckedMargin):
    """The combined angular margin ``phi(theta) = cos(m1 * theta + m2) - m3``, independent of the norm.

    Args:
        m1: multiplicative angular margin (dimensionless, > 0). 1 for ArcFace and CosFace.
        m2: additive angular margin in **degrees**, in ``[0, 180)``.
        m3: additive cosine margin (dimensionless, >= 0).
        easy_margin: apply the margin only where ``cos(theta) > 0``.

    Each attribute is checked whenever it is set, so a schedule that changes ``m2`` between steps cannot
    put the margin in an invalid state.
    """

    _checks: ClassVar[dict[str, Callable[[str, object], object]]] = {
        "m1": check_positive,
        "m2": check_angle_degrees,
        "m3": check_nonnegative,
        "easy_margin": check_bool,
    }
    _m1: float
    _m2: float
    _m3: float
    _easy_margin: bool

    def __init__(self, m1: float = 1.0, m2: float = 0.0, m3: float = 0.0, easy_margin: bool = False) -> None:
        super().__init__()
        self.m1, self.m2, self.m3, self.easy_margin = m1, m2, m3, easy_margin

    @classmethod
    def arcface(cls, margin: float = 28.6, easy_margin: bool = False) -> AngularMargin:
        """ArcFace's ``(1, margin, 0)``; errors name ``margin``."""
        spec = cls()
        spec.set("m2", margin, label="margin")
        spec.easy_margin = easy_margin
        return spec

    @classmethod
    def cosface(cls, margin: float = 0.35, easy_margin: bool = False) -> AngularMargin:
        """CosFace's ``(1, 0, margin)``; errors name ``margin``."""
        spec = cls()
        spec.set("m3", margin, label="margin")
        spec.easy_margin = easy_margin
        return spec

    m1 = checked_attribute("m1", "Multiplicative angular margin.")
    m2 = checked_attribute("m2", "Additive angular margin, degrees.")
    m3 = checked_attribute("m3", "Additive cosine margin.")
    easy_margin = checked_attribute("easy_margin", "Margin only where cos > 0.")

    @property
    def m2_radians(self) -> float:
        return math.radians(self._m2)

    @property
    def threshold_angle(self) -> float:
        """Angle (radians) past which the fallback applies: where ``m1 * theta + m2`` reaches pi."""
        return (math.pi - self.m2_radians) / self.m1

    @property
    def fallback_shift(self) -> float:
        """The constant ``delta`` of the fallback ``phi = cos(theta) - delta - m3``."""
        if self.m1 == 1.0:
            return self.m2_radians * math.sin(self.m2_radians)
        return 1.0 + math.cos(min(self.threshold_angle, math.pi))

    def forward(self, cos: Tensor, norm: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Target logit (unscaled) and its derivative; ``norm`` is not used."""
        c = cos.detach().clamp(-1.0, 1.0)
        sin_floor = math.sqrt(torch.finfo(c.dtype).eps)
        sin_theta = torch.sqrt((1.0 - c * c).clamp_min(0.0))
        sin_safe = sin_theta.clamp_min(sin_floor)
        m2 = self.m2_radians
        if self.m1 == 1.0:
            cos_m, sin_m = math.cos(m2), math.sin(m2)
            phi = c * cos_m - sin_theta * sin_m
            dphi = cos_m + c * (sin_m / sin_safe) if m2 else torch.ones_like(c)
        else:
            angle = self.m1 * torch.acos(c) + m2
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

    def extra_repr(self) -> str:
        return f"m1={self.m1:g}, m2={self.m2:g}deg, m3={self.m3:g}, easy_margin={self.easy_margin}"
