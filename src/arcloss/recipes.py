"""Small, measured training recipes for angular-margin losses trained from scratch on few classes.

Why ArcFace at the drop-in defaults (``scale=64``, ``margin=28.6°``, ``W ~ N(0, 1)``) can fail on a small dataset:

* **Scale vs number of classes.** At initialisation every cosine is ≈ 0, so the target logit
  ``s·cos(90° + m) ≈ -0.48·s`` is far below the others: at ``s = 64`` the loss sits near ``31 + ln C`` with
  saturated, hard-negative-dominated gradients. AdaCos (Zhang et al., 2019) derives the scale at which the
  softmax probability still discriminates: :func:`adacos_scale`, ``√2·ln(C − 1)`` (≈ 8 for C = 300 classes).
* **Class-centre step size.** ``∂L/∂W_j`` scales like ``1/|W_j|`` and an SGD step turns ``W_j`` by
  ``≈ lr·|g|/|W_j|``, i.e. ``∝ lr/|W_j|²``. With N(0, 1) entries ``|W_j| ≈ √D``, so the centres turn ``D`` times
  slower than unit-norm centres (128× for D = 128). :func:`unit_norm_init_` gives ``|W_j| ≈ 1``.
* **Margin before features exist.** :class:`MarginWarmup` ramps the margin from 0 so the first epochs train a
  plain normalised softmax.

See ``docs/face_benchmark.md`` for the measurements behind each rule. None of them changes the loss modules'
defaults: pass them explicitly, e.g.
``ArcFaceLoss(C, D, scale=adacos_scale(C), weight_init_func=unit_norm_init_)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["MarginWarmup", "adacos_scale", "unit_norm_init_"]


def adacos_scale(num_classes: int) -> float:
    """AdaCos's fixed scale ``√2 · ln(C − 1)`` for ``C = num_classes >= 3`` (dimensionless)."""
    if int(num_classes) != num_classes or num_classes < 3:
        raise ValueError(f"num_classes must be an integer >= 3, got {num_classes!r}")
    return math.sqrt(2.0) * math.log(num_classes - 1)


def unit_norm_init_(weight: Tensor) -> Tensor:
    """In place: entries ~ N(0, 1/D) for ``weight`` of shape ``(D, C)`` (arcloss's ``W``), so each class centre
    (column) has norm ≈ 1 instead of ≈ √D. Use as ``weight_init_func``. Returns ``weight``."""
    if weight.dim() != 2:
        raise ValueError(f"weight must be (embedding_size, num_classes), got shape {tuple(weight.shape)}")
    with torch.no_grad():
        return nn.init.normal_(weight, mean=0.0, std=1.0 / math.sqrt(weight.shape[0]))


class MarginWarmup:
    """Linear margin warm-up: ``loss.margin = target · min(1, t / warmup_steps)`` at step ``t``.

    Works with any loss whose ``margin`` attribute is read at every forward (:class:`arcloss.ArcFaceLoss`,
    :class:`arcloss.CosFaceLoss`). Call :meth:`step` once per optimiser step, after it; the margin starts at 0.

    Args:
        loss: the loss module.
        warmup_steps: steps to reach the target (``0``: target from the start).
        target: final margin, in the loss's units (default: ``loss.margin`` at construction).
    """

    def __init__(self, loss: nn.Module, warmup_steps: int, target: float | None = None) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.loss = loss
        self.warmup_steps = int(warmup_steps)
        self.target = float(loss.margin if target is None else target)
        self.t = 0
        self._apply()

    @property
    def margin(self) -> float:
        """The margin in force now."""
        if self.warmup_steps == 0:
            return self.target
        return self.target * min(1.0, self.t / self.warmup_steps)

    def step(self) -> None:
        """Advance one step and set ``loss.margin``."""
        self.t += 1
        self._apply()

    def _apply(self) -> None:
        self.loss.margin = self.margin
