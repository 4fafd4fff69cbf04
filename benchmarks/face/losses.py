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

from torch import nn

from arcloss import AdaFaceLoss, ArcFaceLoss, CosFaceLoss, MagFaceLoss
from arcloss.recipes import adacos_scale, unit_norm_init_
from benchmarks.baselines import NormSoftmaxLoss, SoftmaxLoss

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


def make_loss(spec: LossSpec, num_classes: int, embedding_size: int, backend: str = "auto") -> nn.Module:
    """Build the loss module of ``spec`` for ``num_classes`` identities and embeddings of width ``embedding_size``
    (``backend``: arcloss's ``"auto"``, ``"torch"`` or ``"triton"``)."""
    if spec.kind == "softmax":
        return SoftmaxLoss(num_classes, embedding_size)  # with bias, as a classifier head is usually written
    init = unit_norm_init_ if spec.init == "unit" else None
    if spec.kind == "norm-softmax":
        scale = adacos_scale(num_classes) if isinstance(spec.s, str) else spec.s
        return NormSoftmaxLoss(num_classes, embedding_size, scale, unit_init=spec.init == "unit")
    if spec.kind in ("adaface", "magface"):
        return _make_adaptive(spec, num_classes, embedding_size, init, backend)
    cls = ArcFaceLoss if spec.kind == "arcface" else CosFaceLoss
    margin = {} if spec.m is None else {"margin": spec.m}
    loss = cls(num_classes, embedding_size, weight_init_func=init, backend=backend, **margin)
    if spec.s == "auto":
        margin = {"margin_degrees": loss.margin} if spec.kind == "arcface" else {"cosine_margin": loss.margin}
        loss.scale = adacos_scale(num_classes, **margin)
    elif spec.s == "adacos":
        loss.scale = adacos_scale(num_classes)
    else:
        loss.scale = float(spec.s)
    return loss


def _make_adaptive(spec: LossSpec, num_classes: int, embedding_size: int, init, backend: str) -> nn.Module:
    """AdaFace / MagFace at the papers' margins; ``s`` as for ArcFace (``auto`` is not defined for them)."""
    if spec.s == "auto":
        raise ValueError(f"{spec.kind}: s=auto (the margin-aware scale) is defined for fixed margins only")
    scale = adacos_scale(num_classes) if spec.s == "adacos" else float(spec.s)
    if spec.kind == "adaface":
        margin = {} if spec.m is None else {"margin": spec.m}
        return AdaFaceLoss(num_classes, embedding_size, scale=scale, weight_init_func=init, backend=backend, **margin)
    if spec.warmup:
        raise ValueError("magface has no single margin to warm up")
    if spec.m is not None:
        raise ValueError("magface takes no m: its margin runs from l_margin to u_margin with the feature norm")
    return MagFaceLoss(num_classes, embedding_size, scale=scale, weight_init_func=init, backend=backend)


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


def display_name(spec: LossSpec, loss: nn.Module) -> str:
    """A name for tables and legends that says what the run is (the spec text, e.g. ``arcface:s=auto``, does not)."""
    if spec.kind == "softmax":
        return "softmax (Linear + cross-entropy)"
    name = {"arcface": "ArcFace", "cosface": "CosFace", "norm-softmax": "normalised softmax"}[spec.kind]
    if spec.label == "arcface-default":
        return f"{name}, drop-in defaults (s={loss.scale:g}, m={loss.margin:g}°, N(0, 1) centres)"
    parts = []
    if spec.label in ("arcface", "norm-softmax", "cosface"):
        name += ", recipe"
    scale = {"adacos": "√2·ln(C−1) = ", "auto": "margin-aware "}.get(spec.s, "") if isinstance(spec.s, str) else ""
    parts.append(f"s={scale}{loss.scale:.3g}")
    if hasattr(loss, "margin") and spec.m is not None:
        parts.append(f"m={loss.margin:g}" + ("°" if spec.kind == "arcface" else ""))
    parts.append("unit-norm centres" if spec.init == "unit" else "N(0, 1) centres")
    if spec.warmup:
        parts.append(f"margin warm-up {spec.warmup:g} epochs")
    if spec.lr != 1.0:
        parts.append(f"centres at {spec.lr:g}× lr")
    return f"{name} ({', '.join(parts)})"
