"""Input checks shared by every loss. Each raises ``TypeError``/``ValueError`` naming the offending value.

Shape and dtype checks are free and always run (:func:`check_inputs`). Checks that read tensor *values*
(label range, finite embeddings; :func:`check_values`) synchronise with the device; they run inside the
target-cosine custom op (so also under ``torch.compile``, which does not trace into it) unless switched off
with ``validate=False``.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor


def check_size(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return int(value)


def check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def check_nonnegative(name: str, value: object) -> float:
    """A finite real number >= 0 (e.g. a cosine margin, CosFace's ``m``)."""
    x = check_real(name, value)
    if x < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return x


def check_positive(name: str, value: object) -> float:
    """A finite real number > 0."""
    x = check_real(name, value)
    if x <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return x


def check_fraction(name: str, value: object) -> float:
    """A finite real number in ``[0, 1]``."""
    x = check_real(name, value)
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return x


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def check_scale(scale: object) -> float:
    return check_positive("scale", scale)


def check_angle_degrees(name: str, degrees: object) -> float:
    value = check_real(name, degrees)
    if not 0.0 <= value < 180.0:
        raise ValueError(f"{name} must be in [0, 180) degrees, got {degrees!r}")
    return value


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value  # type: ignore[return-value]


def check_rows_per_chunk(value: object) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
        raise ValueError(f"rows_per_chunk must be a positive int or None, got {value!r}")
    return None if value is None else int(value)


def check_weight(weight: object, sub_centers: int) -> Tensor:
    if not isinstance(weight, Tensor) or not weight.is_floating_point() or weight.dim() != 2:
        raise TypeError("weight must be a 2-D floating-point tensor of shape (embedding_size, num_classes)")
    if weight.shape[1] % sub_centers:
        raise ValueError(f"weight has {weight.shape[1]} columns, not a multiple of sub_centers={sub_centers}")
    return weight


def check_inputs(
    embeddings: object, labels: object, embedding_size: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Types and shapes of ``embeddings`` ``(N, embedding_size)`` and ``labels`` ``(N,)`` on ``device``.

    Returns the embeddings unchanged and the labels as int64 on the embeddings' device.
    """
    if not isinstance(embeddings, Tensor):
        raise TypeError(f"embeddings must be a torch.Tensor, got {type(embeddings).__name__}")
    if not embeddings.is_floating_point():
        raise TypeError(f"embeddings must be a floating-point tensor, got dtype {embeddings.dtype}")
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be 2-D (batch, embedding_size), got shape {tuple(embeddings.shape)}")
    if embeddings.shape[1] != embedding_size:
        raise ValueError(
            f"embeddings have width {embeddings.shape[1]} but the loss expects embedding_size={embedding_size}"
        )
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor of class indices, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor of class indices, got dtype {labels.dtype}")
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D (batch,), got shape {tuple(labels.shape)}")
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"batch sizes differ: embeddings have {embeddings.shape[0]} rows, labels have {labels.shape[0]}"
        )
    if embeddings.device != device:
        raise ValueError(f"embeddings are on {embeddings.device} but the class centres are on {device}")
    return embeddings, labels.to(device=embeddings.device, dtype=torch.int64)


def check_values(embeddings: Tensor, labels: Tensor, num_classes: int) -> None:
    """Label range and finite embeddings (one device synchronisation)."""
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ValueError(f"labels must be in [0, num_classes={num_classes}), got label {bad}")
    if not bool(torch.isfinite(embeddings).all()):
        bad_rows = (~torch.isfinite(embeddings)).any(1).nonzero().flatten().tolist()
        raise ValueError(
            f"embeddings contain NaN or Inf (rows {bad_rows[:8]}{'...' if len(bad_rows) > 8 else ''}); "
            "refusing to compute a loss whose gradient would corrupt the class centres"
        )
