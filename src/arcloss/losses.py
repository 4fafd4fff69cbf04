"""The loss modules. Each stores its configuration and its class centres ``W``; the computation lives in
:mod:`arcloss.functional`.

The constructors, the parameter ``W`` of shape ``(embedding_size, num_classes)``, its N(0, 1)
initialisation and ``get_logits`` match pytorch-metric-learning, so its checkpoints load unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from . import functional as F
from ._backends import BACKENDS
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

__all__ = ["ArcFaceLoss", "CombinedMarginLoss", "CosFaceLoss"]

# pytorch-metric-learning options that would change the loss: accepting and ignoring them would be a lie.
_UNSUPPORTED = {
    "reducer": "reducers are not supported; use reduction='none' and reduce the per-row losses yourself",
    "embedding_regularizer": "regularizers are not supported; add the regularisation term to the loss yourself",
    "weight_regularizer": "regularizers are not supported; add the regularisation term to the loss yourself",
}
_MEANINGLESS_WITHOUT_REGULARIZER = ("embedding_reg_weight", "weight_reg_weight")


def _check_pml_kwargs(kwargs: dict) -> None:
    """Reject pytorch-metric-learning options we do not implement, naming each; accept the no-op ones."""
    for name, why in _UNSUPPORTED.items():
        if kwargs.pop(name, None) is not None:
            raise ValueError(f"{name}: {why}")
    for name in _MEANINGLESS_WITHOUT_REGULARIZER:
        kwargs.pop(name, None)
    distance = kwargs.pop("distance", None)
    if distance is not None:
        is_cosine = type(distance).__name__ == "CosineSimilarity" and getattr(distance, "normalize_embeddings", True)
        if not is_cosine:
            raise ValueError(f"distance={distance!r}: angular-margin losses are defined on cosine similarity only")
    if kwargs.pop("collect_stats", False):
        raise ValueError("collect_stats=True is not supported (pytorch-metric-learning's avg_angle statistic)")
    if kwargs:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(kwargs))}")


class _MarginLoss(nn.Module):
    """Shared machinery: parameters, validation options, ``get_logits``, the forward."""

    W: Tensor
    sub_centers: int = 1

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        scale: float,
        *,
        reduction: str = "mean",
        backend: str = "auto",
        validate: bool = True,
        rows_per_chunk: int | None = None,
        weight_init_func: Callable[[Tensor], object] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **pml_kwargs,
    ) -> None:
        super().__init__()
        _check_pml_kwargs(pml_kwargs)
        self.num_classes = check_size("num_classes", num_classes)
        self.embedding_size = check_size("embedding_size", embedding_size)
        self.scale = check_scale(scale)
        self.reduction = check_choice("reduction", reduction, F.REDUCTIONS)
        self.backend = check_choice("backend", backend, BACKENDS)
        self.validate = bool(validate)
        self.rows_per_chunk = rows_per_chunk
        self.weight_init_func = weight_init_func
        self.W = nn.Parameter(torch.empty(self.embedding_size, self.num_columns, device=device, dtype=dtype))
        self.reset_parameters()

    @property
    def num_columns(self) -> int:
        """Columns of ``W``: ``sub_centers`` class centres per class."""
        return self.num_classes * self.sub_centers

    @property
    def margin_spec(self) -> AngularMargin:
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """Re-initialise ``W``: N(0, 1) per entry like pytorch-metric-learning, or ``weight_init_func(W)``."""
        with torch.no_grad():
            if self.weight_init_func is None:
                nn.init.normal_(self.W)
            else:
                self.weight_init_func(self.W)

    def forward(self, embeddings: Tensor, labels: Tensor, indices_tuple=None, ref_emb=None, ref_labels=None) -> Tensor:
        """Loss of ``embeddings`` ``(N, embedding_size)`` with ``labels`` ``(N,)`` in ``[0, num_classes)``.

        Returns a scalar (``reduction="mean"|"sum"``) or ``(N,)`` (``"none"``). The three trailing
        arguments exist for pytorch-metric-learning's call signature; passing any of them raises.
        """
        for name, value in (("indices_tuple", indices_tuple), ("ref_emb", ref_emb), ("ref_labels", ref_labels)):
            if value is not None:
                raise ValueError(f"{name} is not supported: angular-margin losses use no miner or reference set")
        return F.margin_loss(
            embeddings,
            self.W,
            labels,
            self.margin_spec,
            self.scale,
            reduction=self.reduction,
            backend=self.backend,
            rows_per_chunk=self.rows_per_chunk,
            validate=self.validate,
            sub_centers=self.sub_centers,
        )

    def get_logits(self, embeddings: Tensor) -> Tensor:
        """``scale * cos(theta)`` for every class, ``(N, num_classes)``, without margin (for inference)."""
        if not isinstance(embeddings, Tensor) or embeddings.dim() != 2 or embeddings.shape[1] != self.embedding_size:
            shape = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
            raise ValueError(f"embeddings must have shape (N, {self.embedding_size}), got {shape}")
        return F.cosine_logits(embeddings, self.W, self.scale)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_size={self.embedding_size}, {self._margin_repr()}, "
            f"scale={self.scale:g}, reduction={self.reduction!r}, backend={self.backend!r}"
        )

    def _margin_repr(self) -> str:
        raise NotImplementedError


class ArcFaceLoss(_MarginLoss):
    """ArcFace (Deng et al., arXiv 1801.07698): softmax over ``s * cos(theta_j)``, target ``s * cos(theta_y + m)``.

    Args:
        num_classes: number of classes C.
        embedding_size: embedding width D.
        margin: additive angular margin ``m`` in **degrees** (28.6 ~ 0.5 rad), in ``[0, 180)``.
        scale: logit scale ``s`` (> 0).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"``.
        validate: check label range and finite embeddings each call (one device sync).
        rows_per_chunk: rows per fused chunk (default: from a memory budget, see
            :func:`arcloss.functional.margin_loss`).
        weight_init_func: called on ``W`` to initialise it (default ``nn.init.normal_``).
        easy_margin: apply the margin only where ``cos(theta_y) > 0`` (off by default, as in the paper).
        device, dtype: of ``W``.

    Attributes:
        W: ``(embedding_size, num_classes)`` class centres.
        margin: the margin in degrees (may be changed between steps, e.g. by a warm-up schedule);
            ``margin_radians`` in radians.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 28.6,
        scale: float = 64,
        *,
        easy_margin: bool = False,
        **kwargs,
    ) -> None:
        self.margin = check_angle_degrees("margin", margin)
        self.easy_margin = bool(easy_margin)
        super().__init__(num_classes, embedding_size, scale, **kwargs)

    @property
    def margin_radians(self) -> float:
        return math.radians(self.margin)

    @property
    def margin_spec(self) -> AngularMargin:
        return AngularMargin(m2=self.margin_radians, easy_margin=self.easy_margin)

    def _margin_repr(self) -> str:
        return f"margin={self.margin:g}deg" + (", easy_margin=True" if self.easy_margin else "")


class CosFaceLoss(_MarginLoss):
    """CosFace (Wang et al., arXiv 1801.09414): target logit ``s * (cos(theta_y) - m)``.

    ``margin`` is a cosine margin (dimensionless, >= 0). Other arguments as :class:`ArcFaceLoss`.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 0.35,
        scale: float = 64,
        *,
        easy_margin: bool = False,
        **kwargs,
    ) -> None:
        self.margin = check_cosine_margin("margin", margin)
        self.easy_margin = bool(easy_margin)
        super().__init__(num_classes, embedding_size, scale, **kwargs)

    @property
    def margin_spec(self) -> AngularMargin:
        return AngularMargin(m3=self.margin, easy_margin=self.easy_margin)

    def _margin_repr(self) -> str:
        return f"margin={self.margin:g}" + (", easy_margin=True" if self.easy_margin else "")


class CombinedMarginLoss(_MarginLoss):
    """insightface's combined margin: target logit ``s * (cos(m1 * theta_y + m2) - m3)``.

    ArcFace is ``(1, m, 0)``, CosFace ``(1, 0, m)``, SphereFace-style ``m1 > 1``.

    Args:
        m1: multiplicative angular margin (> 0, dimensionless).
        m2: additive angular margin in **degrees**, in ``[0, 180)`` (as :class:`ArcFaceLoss`).
        m3: additive cosine margin (>= 0, dimensionless, as :class:`CosFaceLoss`).
        easy_margin: apply the margin only where ``cos(theta_y) > 0``.
        Others as :class:`ArcFaceLoss`.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        m1: float = 1.0,
        m2: float = 28.6,
        m3: float = 0.0,
        scale: float = 64,
        easy_margin: bool = False,
        **kwargs,
    ) -> None:
        self.m1 = check_real("m1", m1)
        self.m2 = check_angle_degrees("m2", m2)
        self.m3 = check_real("m3", m3)
        self.easy_margin = bool(easy_margin)
        self._spec = AngularMargin(self.m1, math.radians(self.m2), self.m3, self.easy_margin)
        super().__init__(num_classes, embedding_size, scale, **kwargs)

    @property
    def margin_spec(self) -> AngularMargin:
        return self._spec

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
        **kwargs,
    ) -> None:
        self.sub_centers = check_size("sub_centers", sub_centers)
        super().__init__(num_classes, embedding_size, margin, scale, **kwargs)

    def get_logits(self, embeddings: Tensor) -> Tensor:
        """``scale * max_k cos(theta_{c,k})`` for every class, ``(N, num_classes)``, without margin."""
        logits = super().get_logits(embeddings)
        return logits.view(-1, self.num_classes, self.sub_centers).amax(dim=2)

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
            threshold: angle in degrees.
            return_dominant_centers: also return the ``(embedding_size, num_classes)`` dominant centres
                (a class absent from the batch gets its first sub-centre).

        Returns:
            The outliers' row indices ``(M,)`` in increasing order, and the dominant centres if asked.
        """
        embeddings, labels = check_inputs(
            embeddings, labels, self.W, check_values=self.validate, sub_centers=self.sub_centers
        )
        threshold = check_angle_degrees("threshold", threshold)
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
