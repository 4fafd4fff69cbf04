"""The losses compared by the face benchmark, each a module ``loss(embeddings (N, D), labels (N,)) -> scalar``.

A loss is named by a spec ``NAME[:key=value,...]``, e.g. ``arcface`` or ``arcface:s=64,init=normal,warmup=0``.

===================  ======================================================================================
``softmax``          ``nn.Linear(D, C)`` + cross-entropy (the plain-softmax baseline).
``norm-softmax``     cross-entropy of ``s·cos(θ_j)`` (normalised embeddings and centres, no margin): the naive loss.
``arcface``          :class:`arcloss.ArcFaceLoss` (m=28.6°) with the recommended recipe ``RECIPE``.
``arcface-default``  :class:`arcloss.ArcFaceLoss` at its drop-in defaults (s=64, m=28.6°, W ~ N(0, 1)).
``cosface``          :class:`arcloss.CosFaceLoss` (m=0.35), unit-norm centres, margin-aware scale (``s=auto``).
``adaface``          :class:`arcloss.AdaFaceLoss` (paper's m=0.4, h=0.333, t_alpha=0.01) with ``RECIPE``'s s and init.
``magface``          :class:`arcloss.MagFaceLoss` (paper's l_a=10, u_a=110, margins 0.45–0.8 rad, λ_g=35, easy
                     margin) with ``RECIPE``'s s and init.
===================  ======================================================================================

Keys: ``s`` scale (``auto``: :func:`arcloss.recipes.adacos_scale` for the loss's margin, ln(C−1)/(cos(45°+m) − m₃);
``adacos``: the margin-free √2·ln(C−1)), ``m`` margin (degrees for ArcFace, cosine for CosFace),
``m`` for ``adaface`` is its dimensionless m (``magface`` takes no ``m``),
``init`` (``normal``: N(0, 1) as pytorch-metric-learning; ``unit``: N(0, 1/D)), ``warmup`` margin warm-up in
epochs, ``lr`` learning-rate multiplier of the loss's own parameters relative to the backbone's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from arcloss import AdaFaceLoss, ArcFaceLoss, CosFaceLoss, MagFaceLoss
from arcloss.recipes import adacos_scale, unit_norm_init_

# What `arcface` / `norm-softmax` mean here (the documented recommendation; see docs/face_benchmark.md): AdaCos's
# fixed scale sqrt(2)*ln(C-1) and unit-norm class centres. The margin-aware scale (s=auto, 20.2 for C=300) trained
# unstably for ArcFace (2 of 3 seeds collapsed, with or without margin warm-up); for CosFace (16.0) it was stable.
RECIPE = {"s": "adacos", "init": "unit", "warmup": 0.0, "lr": 1.0}


@dataclass(frozen=True)
class LossSpec:
    """A parsed loss spec. ``s``: float, "auto" or "adacos"; ``m``: margin or None (the loss's default)."""

    kind: str
    s: float | str = 64.0
    m: float | None = None
    init: str = "normal"
    warmup: float = 0.0
    lr: float = 1.0
    label: str = ""


_BASE = {
    "softmax": LossSpec("softmax"),
    "norm-softmax": LossSpec("norm-softmax", **RECIPE),
    "arcface": LossSpec("arcface", **RECIPE),
    "arcface-default": LossSpec("arcface"),
    "cosface": LossSpec("cosface", **{**RECIPE, "s": "auto"}),
    # The quality-adaptive losses at their papers' margins with the ArcFace recipe's scale and centres: the papers'
    # s=64 does not train from scratch on this small set (as ArcFace's drop-in default shows).
    "adaface": LossSpec("adaface", **RECIPE),
    "magface": LossSpec("magface", **RECIPE),
}
LOSS_NAMES = tuple(_BASE)


def parse_spec(text: str) -> LossSpec:
    """``NAME[:key=value,...]`` → :class:`LossSpec` (label = the text)."""
    name, _, opts = text.partition(":")
    if name not in _BASE:
        raise ValueError(f"unknown loss {name!r}; choose from {LOSS_NAMES}")
    spec = _BASE[name]
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        if key == "s":
            spec = replace(spec, s=value if value in ("auto", "adacos") else float(value))
        elif key == "m":
            spec = replace(spec, m=float(value))
        elif key == "init":
            if value not in ("normal", "unit"):
                raise ValueError(f"init must be normal|unit, got {value!r}")
            spec = replace(spec, init=value)
        elif key in ("warmup", "lr"):
            spec = replace(spec, **{key: float(value)})
        else:
            raise ValueError(f"unknown key {key!r} in loss spec {text!r}")
    return replace(spec, label=text)


class SoftmaxLoss(nn.Module):
    """``nn.Linear(D, C)`` then cross-entropy."""

    def __init__(self, num_classes: int, embedding_size: int) -> None:
        super().__init__()
        self.fc = nn.Linear(embedding_size, num_classes)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(self.fc(embeddings), labels)


class NormSoftmaxLoss(nn.Module):
    """Cross-entropy of ``scale · cos(θ_j)``; centres ``W`` ``(D, C)`` initialised like arcloss's."""

    def __init__(self, num_classes: int, embedding_size: int, scale: float, unit_init: bool) -> None:
        super().__init__()
        self.scale = scale
        self.W = nn.Parameter(torch.empty(embedding_size, num_classes))
        unit_norm_init_(self.W) if unit_init else nn.init.normal_(self.W)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        cos = F.normalize(embeddings, dim=1) @ F.normalize(self.W, dim=0)
        return F.cross_entropy(self.scale * cos, labels)


def make_loss(spec: LossSpec, num_classes: int, embedding_size: int) -> nn.Module:
    """Build the loss module of ``spec`` for ``num_classes`` identities and embeddings of width ``embedding_size``."""
    if spec.kind == "softmax":
        return SoftmaxLoss(num_classes, embedding_size)
    init = unit_norm_init_ if spec.init == "unit" else None
    if spec.kind == "norm-softmax":
        scale = adacos_scale(num_classes) if isinstance(spec.s, str) else spec.s
        return NormSoftmaxLoss(num_classes, embedding_size, scale, spec.init == "unit")
    if spec.kind in ("adaface", "magface"):
        return _make_adaptive(spec, num_classes, embedding_size, init)
    cls = ArcFaceLoss if spec.kind == "arcface" else CosFaceLoss
    loss = cls(num_classes, embedding_size, weight_init_func=init, **({} if spec.m is None else {"margin": spec.m}))
    if spec.s == "auto":
        margin = {"margin_degrees": loss.margin} if spec.kind == "arcface" else {"cosine_margin": loss.margin}
        loss.scale = adacos_scale(num_classes, **margin)
    elif spec.s == "adacos":
        loss.scale = adacos_scale(num_classes)
    else:
        loss.scale = float(spec.s)
    return loss


def _make_adaptive(spec: LossSpec, num_classes: int, embedding_size: int, init) -> nn.Module:
    """AdaFace / MagFace at the papers' margins; ``s`` as for ArcFace (``auto`` is not defined for them)."""
    if spec.s == "auto":
        raise ValueError(f"{spec.kind}: s=auto (the margin-aware scale) is defined for fixed margins only")
    scale = adacos_scale(num_classes) if spec.s == "adacos" else float(spec.s)
    if spec.kind == "adaface":
        margin = {} if spec.m is None else {"margin": spec.m}
        return AdaFaceLoss(num_classes, embedding_size, scale=scale, weight_init_func=init, **margin)
    if spec.warmup:
        raise ValueError("magface has no single margin to warm up")
    if spec.m is not None:
        raise ValueError("magface takes no m: its margin runs from l_margin to u_margin with the feature norm")
    return MagFaceLoss(num_classes, embedding_size, scale=scale, weight_init_func=init)


def describe(spec: LossSpec, loss: nn.Module) -> str:
    """The loss's effective hyper-parameters, without its label: equal strings mean identical training."""
    if spec.kind == "softmax":
        return f"softmax: Linear + cross-entropy, lr x{spec.lr:g}"
    if spec.kind in ("adaface", "magface"):
        margin_fn = loss.margin_fn  # the adaptive margins' hyper-parameters, all of them
        return (
            f"{spec.kind}: s={loss.scale:.4g}, {margin_fn.extra_repr()}, init={spec.init}, "
            f"margin warm-up {spec.warmup:g} epochs, lr x{spec.lr:g}"
        )
    margin = f", m={loss.margin:g}" if hasattr(loss, "margin") else ""
    return (
        f"{spec.kind}: s={loss.scale:.4g}{margin}, init={spec.init}, margin warm-up {spec.warmup:g} epochs, "
        f"lr x{spec.lr:g}"
    )
