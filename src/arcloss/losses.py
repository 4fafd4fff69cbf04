"""The loss modules. Each stores its configuration, its class centres ``W`` and one margin module; the
computation lives in :mod:`arcloss.functional`.

The constructors, the parameter ``W`` of shape ``(embedding_size, num_classes)``, its N(0, 1)
initialisation and ``get_logits`` match pytorch-metric-learning, so its checkpoints load unchanged. With
``sharding=`` (:class:`arcloss.distributed.Sharding`) the same modules hold one rank's block of classes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from . import functional as F
from ._validation import (
    check_choice,
    check_inputs,
    check_real,
    check_rows_per_chunk,
    check_scale,
    check_size,
    check_values,
)
from .adaptive import AdaFaceMargin, MagFaceMargin
from .distributed.sharding import Sharding
from .functional import Reduction
from .margins import AngularMargin, Margin
from .ops import BACKENDS

__all__ = [
    "AdaFaceLoss",
    "ArcFaceLoss",
    "CombinedMarginLoss",
    "CosFaceLoss",
    "MagFaceLoss",
    "MarginLoss",
    "SubCenterArcFaceLoss",
]

InitFunc = Callable[[Tensor], object]
Device = torch.device | str | None

# pytorch-metric-learning options that would change the loss: accepting and ignoring them would be a lie.
_UNSUPPORTED = {
    "reducer": "reducers are not supported; use reduction='none' and reduce the per-row losses yourself",
    "embedding_regularizer": "regularizers are not supported; add the regularisation term to the loss yourself",
    "weight_regularizer": "regularizers are not supported; add the regularisation term to the loss yourself",
}
_MEANINGLESS_WITHOUT_REGULARIZER = ("embedding_reg_weight", "weight_reg_weight")


def _check_pml_options(options: dict[str, object]) -> None:
    """Reject pytorch-metric-learning options we do not implement, naming each; accept the no-op ones."""
    for name, why in _UNSUPPORTED.items():
        if options.pop(name, None) is not None:
            raise ValueError(f"{name}: {why}")
    for name in _MEANINGLESS_WITHOUT_REGULARIZER:
        options.pop(name, None)
    distance = options.pop("distance", None)
    if distance is not None:
        is_cosine = type(distance).__name__ == "CosineSimilarity" and getattr(distance, "normalize_embeddings", True)
        if not is_cosine:
            raise ValueError(f"distance={distance!r}: angular-margin losses are defined on cosine similarity only")
    if options.pop("collect_stats", False):
        raise ValueError("collect_stats=True is not supported (pytorch-metric-learning's avg_angle statistic)")
    if options:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(options))}")


@dataclass(frozen=True)
class LossOptions:
    """The options every loss takes, in one typed object (see :class:`MarginLoss` for their meaning)."""

    reduction: Reduction = "mean"
    backend: str = "auto"
    validate: bool = True
    rows_per_chunk: int | None = None
    weight_init_func: InitFunc | None = None
    sharding: Sharding | None = None
    device: Device = None
    dtype: torch.dtype | None = None


class MarginAttribute:
    """A loss attribute that lives on the loss's margin module, the single source of truth: setting it
    (e.g. a warm-up schedule) changes the margin of the next forward, sharded losses included."""

    def __init__(self, name: str, doc: str, label: str | None = None) -> None:
        self.name, self.label = name, label or name
        self.__doc__ = doc

    def __get__(self, loss: MarginLoss | None, owner: type | None = None) -> Any:
        return self if loss is None else getattr(loss.margin_fn, self.name)

    def __set__(self, loss: MarginLoss, value: object) -> None:
        loss.margin_fn.set(self.name, value, label=self.label)


class MarginLoss(nn.Module):
    """Softmax cross-entropy over ``scale * cos(theta)`` with any :class:`~arcloss.margins.Margin` on the target.

    Args:
        num_classes: number of classes C (all ranks' classes when sharded).
        embedding_size: embedding width D.
        margin_fn: the margin module (the loss owns it: ``loss.margin_fn``).
        scale: logit scale ``s`` (> 0).
        sub_centers: K centres per class (``W`` has ``C * K`` columns, class c owning ``c*K .. c*K+K-1``).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per-row losses).
        backend: ``"auto"`` or an engine (``"torch"``, ``"triton"``); ``"auto"`` takes Triton for CUDA tensors.
        validate: check label range and finite embeddings each call (one device sync, also under
            ``torch.compile``).
        rows_per_chunk: rows per fused chunk (default: from a memory budget of max(16 MiB, 0.2 x bytes of W)).
        weight_init_func: called on ``W`` to initialise it (default ``nn.init.normal_``, as pytorch-metric-learning).
        sharding: an :class:`arcloss.distributed.Sharding`: ``W`` holds this rank's classes only.
        device: of ``W``.
        dtype: of ``W``.

    Attributes:
        W: ``(embedding_size, num_classes * sub_centers)`` class centres (this rank's columns when sharded).
    """

    W: Tensor
    margin_fn: Margin
    reduction: Reduction
    sharding: Sharding | None

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin_fn: Margin,
        scale: float = 64,
        *,
        sub_centers: int = 1,
        reduction: Reduction = "mean",
        backend: str = "auto",
        validate: bool = True,
        rows_per_chunk: int | None = None,
        weight_init_func: InitFunc | None = None,
        sharding: Sharding | None = None,
        device: Device = None,
        dtype: torch.dtype | None = None,
        **pml_options: object,
    ) -> None:
        super().__init__()
        options = LossOptions(reduction, backend, validate, rows_per_chunk, weight_init_func, sharding, device, dtype)
        self._build(num_classes, embedding_size, margin_fn, scale, sub_centers, options, pml_options)

    def _build(
        self,
        num_classes: int,
        embedding_size: int,
        margin_fn: Margin,
        scale: float,
        sub_centers: int,
        options: LossOptions,
        pml_options: dict[str, object],
    ) -> None:
        _check_pml_options(pml_options)
        if not isinstance(margin_fn, Margin):
            raise TypeError(f"margin_fn must be an arcloss.margins.Margin, got {type(margin_fn).__name__}")
        self.num_classes = check_size("num_classes", num_classes)
        self.embedding_size = check_size("embedding_size", embedding_size)
        self.sub_centers = check_size("sub_centers", sub_centers)
        self.margin_fn = margin_fn
        self.scale = check_scale(scale)
        self.reduction = cast(Reduction, check_choice("reduction", options.reduction, F.REDUCTIONS))
        self.backend = check_choice("backend", options.backend, BACKENDS)
        self.validate = bool(options.validate)
        self.rows_per_chunk = check_rows_per_chunk(options.rows_per_chunk)
        self.weight_init_func = options.weight_init_func
        sharding = options.sharding
        if sharding is not None and not isinstance(sharding, Sharding):
            raise TypeError(f"sharding must be an arcloss.distributed.Sharding, got {type(sharding).__name__}")
        self.sharding = None if sharding is None else sharding.attach(self.num_classes)
        local_classes = self.num_classes if sharding is None else sharding.local_classes
        columns = local_classes * self.sub_centers
        self.W = nn.Parameter(torch.empty(self.embedding_size, columns, device=options.device, dtype=options.dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise ``W``: ``weight_init_func(W)``, else N(0, 1) per entry like pytorch-metric-learning
        (sharded: drawn per block of classes from the sharding's seed, the same whatever the world size)."""
        with torch.no_grad():
            if self.weight_init_func is not None:
                self.weight_init_func(self.W)
            elif self.sharding is not None:
                self.sharding.init_weight_(self.W, self.sub_centers)
            else:
                nn.init.normal_(self.W)

    def forward(self, embeddings: Tensor, labels: Tensor, indices_tuple=None, ref_emb=None, ref_labels=None) -> Tensor:
        """Loss of ``embeddings`` ``(N, embedding_size)`` with ``labels`` ``(N,)`` in ``[0, num_classes)``.

        Returns a scalar (``reduction="mean"|"sum"``) or ``(N,)`` (``"none"``). The three trailing
        arguments exist for pytorch-metric-learning's call signature; passing any of them raises. Sharded:
        every rank passes its own batch and gets the loss of the global batch (``(N_global,)`` for
        ``"none"``, in rank order).
        """
        for name, value in (("indices_tuple", indices_tuple), ("ref_emb", ref_emb), ("ref_labels", ref_labels)):
            if value is not None:
                raise ValueError(f"{name} is not supported: angular-margin losses use no miner or reference set")
        if self.sharding is not None:
            return self.sharding.loss(self, embeddings, labels)
        return F.margin_loss(
            embeddings,
            self.W,
            labels,
            self.margin_fn,
            self.scale,
            reduction=self.reduction,
            backend=self.backend,
            rows_per_chunk=self.rows_per_chunk,
            validate=self.validate,
            sub_centers=self.sub_centers,
        )

    def get_logits(self, embeddings: Tensor) -> Tensor:
        """``scale * cos(theta)`` for every class (a class's best sub-centre), ``(N, classes)``, without margin.
        Sharded: this rank's classes."""
        if not isinstance(embeddings, Tensor) or embeddings.dim() != 2 or embeddings.shape[1] != self.embedding_size:
            shape = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
            raise ValueError(f"embeddings must have shape (N, {self.embedding_size}), got {shape}")
        logits = F.cosine_logits(embeddings, self.W, self.scale)
        if self.sub_centers == 1:
            return logits
        return logits.view(logits.shape[0], -1, self.sub_centers).amax(dim=2)

    def extra_repr(self) -> str:
        sub = f", sub_centers={self.sub_centers}" if self.sub_centers > 1 else ""
        return (
            f"num_classes={self.num_classes}, embedding_size={self.embedding_size}{sub}, {self._margin_repr()}, "
            f"scale={self.scale:g}, reduction={self.reduction!r}, backend={self.backend!r}"
        )

    def _margin_repr(self) -> str:
        return f"margin_fn={self.margin_fn!r}"


class ArcFaceLoss(MarginLoss):
    """ArcFace (Deng et al., arXiv 1801.07698): softmax over ``s * cos(theta_j)``, target ``s * cos(theta_y + m)``.

    Past ``theta_y > 180° - m`` the target logit is ``s * (cos(theta_y) - m * sin(m))`` (``m`` in radians), as
    in insightface and pytorch-metric-learning. The other arguments are those of :class:`MarginLoss`.

    Args:
        num_classes: number of classes C.
        embedding_size: embedding width D.
        margin: additive angular margin ``m`` in **degrees** (28.6 ~ 0.5 rad), in ``[0, 180)``.
        scale: logit scale ``s`` (> 0).
        easy_margin: apply the margin only where ``cos(theta_y) > 0`` (off by default, as in the paper).

    Attributes:
        W: ``(embedding_size, num_classes)`` class centres.
        margin: the margin in degrees (may be changed between steps, e.g. by a warm-up schedule);
            ``margin_radians`` in radians.
    """

    margin_fn: AngularMargin
    margin = MarginAttribute("m2", "Additive angular margin in degrees.", "margin")
    easy_margin = MarginAttribute("easy_margin", "Margin only where cos(theta_y) > 0.")

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 28.6,
        scale: float = 64,
        *,
        easy_margin: bool = False,
        reduction: Reduction = "mean",
        backend: str = "auto",
        validate: bool = True,
        rows_per_chunk: int | None = None,
        weight_init_func: InitFunc | None = None,
        sharding: Sharding | None = None,
        device: Device = None,
        dtype: torch.dtype | None = None,
        **pml_options: object,
    ) -> None:
        nn.Module.__init__(self)
        options = LossOptions(reduction, backend, validate, rows_per_chunk, weight_init_func, sharding, device, dtype)
        self._build(
            num_classes, embedding_size, AngularMargin.arcface(margin, easy_margin), scale, 1, options, pml_options
        )

    @property
    def margin_radians(self) -> float:
        return self.margin_fn.m2_radians

    def _margin_repr(self) -> str:
        return f"margin={self.margin:g}deg" + (", easy_margin=True" if self.easy_margin else "")


class CosFaceLoss(MarginLoss):
    """CosFace (Wang et al., arXiv 1801.09414): target logit ``s * (cos(theta_y) - m)``.

    ``margin`` is a cosine margin (dimensionless, >= 0). Other arguments as :class:`ArcFaceLoss`.
    """

    margin = MarginAttribute("m3", "Cosine margin (dimensionless).", "margin")
    easy_margin = MarginAttribute("easy_margin", "Margin only where cos(theta_y) > 0.")

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 0.35,
        scale: float = 64,
        *,
        easy_margin: bool = False,
        reduction: Reduction = "mean",
        backend: str = "auto",
        validate: bool = True,
        rows_per_chunk: int | None = None,
        weight_init_func: InitFunc | None = None,
        sharding: Sharding | None = None,
        device: Device = None,
        dtype: torch.dtype | None = None,
        **pml_options: object,
    ) -> None:
        nn.Module.__init__(self)
        options = LossOptions(reduction, backend, validate, rows_per_chunk, weight_init_func, sharding, device, dtype)
        self._build(
            num_classes, embedding_size, AngularMargin.cosface(margin, easy_margin), scale, 1, options, pml_options
        )

    def _margin_repr(self) -> str:
        return f"margin={self.margin:g}" + (", easy_margin=True" if self.easy_margin else "")


class CombinedMarginLoss(MarginLoss):
    """insightface's combined margin: target logit ``s * (cos(m1 * theta_y + m2) - m3)``.

    ArcFace is ``(1, m, 0)``, CosFace ``(1, 0, m)``, SphereFace-style ``m1 > 1``. The other arguments are those
    of :class:`MarginLoss`.

    Args:
        m1: multiplicative angular margin (> 0, dimensionless).
        m2: additive angular margin in **degrees**, in ``[0, 180)`` (as :class:`ArcFaceLoss`).
        m3: additive cosine margin (>= 0, dimensionless, as :class:`CosFaceLoss`).
        easy_margin: apply the margin only where ``cos(theta_y) > 0``.
    """

    m1 = MarginAttribute("m1", "Multiplicative angular margin.")
    m2 = MarginAttribute("m2", "Additive angular margin in degrees.")
    m3 = MarginAttribute("m3", "Additive cosine margin.")
    easy_margin = MarginAttribute("easy_margin", "Margin only where cos(theta_y) > 0.")

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        m1: float = 1.0,
        m2: float = 28.6,
        m3: float = 0.0,
        scale: float = 64,
        easy_margin: bool = False,
        *,
        reduction: Reduction = "mean",
        backend: str = "auto",
        validate: bool = True,
        rows_per_chunk: int | None = None,
        weight_init_func: InitFunc | None = None,
        sharding: Sharding | None = None,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        nn.Module.__init__(self)
        options = LossOptions(reduction, backend, validate, rows_per_chunk, weight_init_func, sharding, device, dtype)
        self._build(num_classes, embedding_size, AngularMargin(m1, m2, m3, easy_margin), scale, 1, options, {})

    def _margin_repr(self) -> str:
        return f"m1={self.m1:g}, m2={self.m2:g}deg, m3={self.m3:g}, easy_margin={self.easy_margin}"


class SubCenterArcFaceLoss(ArcFaceLoss):
    """Sub-centre ArcFace (Deng et al., ECCV 2020): K sub-centres per class, a class's cosine is the best one.

    ``W`` is ``(embedding_size, num_classes * sub_centers)``; class c owns columns ``c*K .. c*K+K-1``
    (pytorch-metric-learning's layout, so its checkpoints load). Other arguments as :class:`ArcFaceLoss`.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 28.6,
        scale: float = 64,
        sub_centers: int = 3,
        *,
        easy_margin: bool = False,
        reduction: Reduction = "mean",
        backend: str = "auto",
        validate: bool = True,
        rows_per_chunk: int | None = None,
        weight_init_func: InitFunc | None = None,
        sharding: Sharding | None = None,
        device: Device = None,
        dtype: torch.dtype | None = None,
        **pml_options: object,
    ) -> None:
        nn.Module.__init__(self)
        options = LossOptions(reduction, backend, validate, rows_per_chunk, weight_init_func, sharding, device, dtype)
        self._build(
            num_classes,
            embedding_size,
            AngularMargin.arcface(margin, easy_margin),
            scale,
            sub_centers,
            options,
            pml_options,
        )

    @torch.no_grad()
    def get_outliers(
        self, embeddings: Tensor, labels: Tensor, threshold: float = 75, return_dominant_centers: bool = True
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Samples far from their class's dominant sub-centre: the sub-centre paper's label cleaning.

        A class's dominant sub-centre is the one most of its samples (in this batch) are closest to; a sample
        is an outlier when its angle to its class's dominant sub-centre exceeds ``threshold`` degrees.

        Args:
            embeddings: ``(N, embedding_size)``.
            labels: ``(N,)`` class indices.
            threshold: angle in degrees, in ``[0, 180]`` (180: no outliers).
            return_dominant_centers: also return the ``(embedding_size, num_classes)`` dominant centres
                (a class absent from the batch gets its first sub-centre).

        Returns:
            The outliers' row indices ``(M,)`` in increasing order, and the dominant centres if asked.
        """
        if self.sharding is not None:
            raise ValueError("get_outliers needs every class: call it on to_single_process(loss)")
        embeddings, labels = check_inputs(embeddings, labels, self.embedding_size, self.W.device)
        if self.validate:
            check_values(embeddings, labels, self.num_classes)
        threshold = check_real("threshold", threshold)
        if not 0.0 <= threshold <= 180.0:
            raise ValueError(f"threshold must be in [0, 180] degrees, got {threshold!r}")
        k = self.sub_centers
        centres = self.W.detach().view(self.embedding_size, self.num_classes, k)
        x = torch.nn.functional.normalize(embeddings.to(self.W.dtype), dim=1)
        own = torch.nn.functional.normalize(centres[:, labels, :], dim=0)  # (D, N, K)
        cos = torch.einsum("nd,dnk->nk", x, own)
        closest = cos.argmax(dim=1)
        votes = torch.bincount(labels * k + closest, minlength=self.num_classes * k).view(self.num_classes, k)
        dominant = votes.argmax(dim=1)  # ties go to the lowest index; absent classes get sub-centre 0
        outliers = (cos.gather(1, dominant[labels, None])[:, 0] < math.cos(math.radians(threshold))).nonzero()
        outliers = outliers.flatten()
        if not return_dominant_centers:
            return outliers
        index = dominant[None, :, None].expand(self.embedding_size, -1, 1)
        return outliers, centres.gather(2, index)[:, :, 0].clone()


class AdaFaceLoss(MarginLoss):
    """AdaFace (Kim et al., CVPR 2022, arXiv 2204.00964): a margin that adapts to image quality, read from the
    feature norm, as the official head computes it (equations in :mod:`arcloss.adaptive`).

    Per row, with ``z = clip(h (|x| - mu) / (sigma + 1e-3), -1, 1)`` from the running mean ``mu`` and std
    ``sigma`` of the (clipped, detached) norms: target logit ``s * (cos(clip(theta - m z)) - m (1 + z))``.

    Args:
        num_classes: number of classes C.
        embedding_size: embedding width D.
        margin: the paper's ``m``, **dimensionless** (0.4): an angle in radians in the angular part and a cosine
            offset in the additive part -- not degrees, unlike :class:`ArcFaceLoss`'s margin.
        h: concentration of the margin scaler (0.333: ~68 % of rows have ``|z| < 0.333``).
        scale: logit scale ``s`` (64 in the paper).
        t_alpha: momentum of the running norm statistics (0.01, the official training configuration's default).
        Others: as :class:`MarginLoss`. ``dtype`` also sets the statistics' dtype (float64, else float32).

    Attributes:
        W: ``(embedding_size, num_classes)`` class centres.
        margin, h, t_alpha: views of the margin module's (settable between steps).
        margin_fn.batch_mean, margin_fn.batch_std: the running statistics (buffers, saved in ``state_dict``;
            updated in training mode only).

    The non-target logits are ``s * cos(theta_j)`` unclamped, where the official head clamps every cosine to
    ``±(1 - 1e-3)``: the losses differ only for rows with a non-target cosine beyond that.
    """

    margin = MarginAttribute("m", "The margin m (dimensionless).", "margin")
    h = MarginAttribute("h", "Concentration of the margin scaler.")
    t_alpha = MarginAttribute("t_alpha", "Momentum of the running norm statistics.")

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 0.4,
        h: float = 0.333,
        scale: float = 64,
        t_alpha: float = 0.01,
        *,
        reduction: Reduction = "mean",
        backend: str = "auto",
        validate: bool = True,
        rows_per_chunk: int | None = None,
        weight_init_func: InitFunc | None = None,
        sharding: Sharding | None = None,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        nn.Module.__init__(self)
        options = LossOptions(reduction, backend, validate, rows_per_chunk, weight_init_func, sharding, device, dtype)
        margin_fn = AdaFaceMargin(h=h, t_alpha=t_alpha, dtype=dtype, device=device)
        margin_fn.set("m", margin, label="margin")
        self._build(num_classes, embedding_size, margin_fn, scale, 1, options, {})

    def _margin_repr(self) -> str:
        return f"margin={self.margin:g}, h={self.h:g}, t_alpha={self.t_alpha:g}"


class MagFaceLoss(MarginLoss):
    """MagFace (Meng et al., CVPR 2021, arXiv 2103.06627): ArcFace with a per-row margin growing linearly with
    the feature norm, plus a regulariser of the norm (equations in :mod:`arcloss.adaptive`).

    ``a = clamp(|x|, l_a, u_a)``, ``m(a) = l_margin + (u_margin - l_margin) (a - l_a) / (u_a - l_a)``; per row
    ``CE(s cos(theta_y + m(a)) vs s cos(theta_j)) + lambda_g (a / u_a^2 + 1 / a)``, reduced by ``reduction``.
    Gradients reach the embeddings through the cosines and through ``a`` (margin and regulariser). The
    embeddings are not normalised beforehand: their norm is the quality (:meth:`quality`).

    Args:
        num_classes: number of classes C.
        embedding_size: embedding width D.
        scale: logit scale ``s`` (64 in the paper).
        l_a, u_a: norm range (10, 110 in the paper).
        l_margin, u_margin: margins at ``l_a`` and ``u_a`` in **degrees** (the paper's 0.45 and 0.8 rad).
        lambda_g: weight of the regulariser (35 in the paper).
        easy_margin: margin only where ``cos(theta_y) > 0`` (on by default, as the official ``MagLinear``).
        Others: as :class:`MarginLoss`.
    """

    l_a = MarginAttribute("l_a", "Lower end of the norm range.")
    u_a = MarginAttribute("u_a", "Upper end of the norm range.")
    l_margin = MarginAttribute("l_margin", "Margin at l_a, degrees.")
    u_margin = MarginAttribute("u_margin", "Margin at u_a, degrees.")
    lambda_g = MarginAttribute("lambda_g", "Weight of the norm regulariser.")
    easy_margin = MarginAttribute("easy_margin", "Margin only where cos(theta_y) > 0.")

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        scale: float = 64,
        l_a: float = 10.0,
        u_a: float = 110.0,
        l_margin: float = math.degrees(0.45),
        u_margin: float = math.degrees(0.8),
        lambda_g: float = 35.0,
        *,
        easy_margin: bool = True,
        reduction: Reduction = "mean",
        backend: str = "auto",
        validate: bool = True,
        rows_per_chunk: int | None = None,
        weight_init_func: InitFunc | None = None,
        sharding: Sharding | None = None,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        nn.Module.__init__(self)
        options = LossOptions(reduction, backend, validate, rows_per_chunk, weight_init_func, sharding, device, dtype)
        margin_fn = MagFaceMargin(l_a, u_a, l_margin, u_margin, lambda_g, easy_margin)
        self._build(num_classes, embedding_size, margin_fn, scale, 1, options, {})

    def quality(self, embeddings: Tensor) -> Tensor:
        """The quality score of each embedding: its norm ``|x_i|`` ``(N,)`` (unclamped, as MagFace's inference),
        in float32 (float64 for float64 embeddings), without gradient."""
        if not isinstance(embeddings, Tensor) or embeddings.dim() != 2 or embeddings.shape[1] != self.embedding_size:
            shape = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
            raise ValueError(f"embeddings must have shape (N, {self.embedding_size}), got {shape}")
        dtype = torch.float64 if embeddings.dtype == torch.float64 else torch.float32
        return torch.linalg.vector_norm(embeddings.detach().to(dtype), dim=1)

    def _margin_repr(self) -> str:
        return (
            f"l_a={self.l_a:g}, u_a={self.u_a:g}, l_margin={self.l_margin:g}deg, u_margin={self.u_margin:g}deg, "
            f"lambda_g={self.lambda_g:g}, easy_margin={self.easy_margin}"
        )
