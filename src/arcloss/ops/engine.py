"""What an engine is: its inputs, outputs and the declaration of what it supports.

An engine takes :class:`EngineInputs` (embeddings, class centres, labels, the per-row target logits and
their slopes, row weights) and a :class:`~arcloss.ops.plan.Plan`, and returns :class:`EngineOutputs`
(per-row losses and gradients). It knows nothing of margins, modules, validation or autograd: those sit in
the layers above and are the same for every engine. The engines are listed in :mod:`arcloss.ops.registry`.
"""

from __future__ import annotations

import abc
import functools
import importlib
import os
from dataclasses import dataclass
from types import ModuleType
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from .plan import Plan

__all__ = ["Engine", "EngineInputs", "EngineOutputs", "triton_available", "triton_reasons", "triton_softmax"]


@functools.cache
def _import_triton_softmax() -> ModuleType | None:
    try:
        return importlib.import_module("arcloss.ops.softmax_triton")
    except ImportError:
        return None


def triton_available() -> bool:
    """Whether Triton imports (on first call; cached)."""
    return _import_triton_softmax() is not None


def triton_softmax() -> ModuleType:
    """:mod:`arcloss.ops.softmax_triton`, imported on first use."""
    module = _import_triton_softmax()
    if module is None:
        raise RuntimeError("triton is not importable: pip install 'arcloss[triton]'")
    return module


@dataclass(frozen=True)
class EngineInputs:
    """The tensors of one fused pass.

    Args:
        x: ``(N, D)`` embeddings, any float dtype, not normalised.
        weight: ``(D, C)`` class centres (``C * K`` columns with sub-centres), not normalised.
        labels: ``(N,)`` int64 target column in ``[0, C)``, or -1 where another shard owns the target.
        target_logit: ``(N,)`` ``s * phi``, accumulation dtype, detached.
        target_slope: ``(N,)`` ``s * dphi/dcos``, accumulation dtype, detached.
        row_weight: ``(N,)`` weight of each row's loss in the gradients (``1/N`` for a mean).
        scale: ``s``; the non-target logits are ``s * cos``.
        want_grad_x, want_grad_w: which gradients to compute.
    """

    x: Tensor
    weight: Tensor
    labels: Tensor
    target_logit: Tensor
    target_slope: Tensor
    row_weight: Tensor
    scale: float
    want_grad_x: bool
    want_grad_w: bool


class EngineOutputs(NamedTuple):
    """``loss`` ``(N,)`` accumulation dtype; ``grad_x`` ``(N, D)`` in ``x.dtype`` and ``grad_w`` ``(D, C)`` in
    ``weight.dtype`` (``None`` where not wanted) of ``sum_i row_weight_i * loss_i``, the target column's
    dependence going through the slope; ``grad_target`` ``(N,)`` its derivative in the target logit,
    ``row_weight_i * (p_iy - 1)``."""

    loss: Tensor
    grad_x: Tensor | None
    grad_w: Tensor | None
    grad_target: Tensor


class Engine(abc.ABC):
    """One implementation of the fused pass."""

    name: ClassVar[str]

    @abc.abstractmethod
    def not_supported_reasons(self, x: Tensor, weight: Tensor, plan: Plan, *, requested: bool) -> list[str]:
        """Why this engine cannot run these inputs (empty when it can). Must not synchronise the device.

        ``requested``: the user named this engine (rather than ``"auto"`` trying it); an engine may accept
        a slow configuration only then (Triton's CPU interpreter, for tests).
        """

    @abc.abstractmethod
    def run(self, inputs: EngineInputs, plan: Plan) -> EngineOutputs:
        """The per-row losses and the gradients wanted."""


def triton_interpreted() -> bool:
    """True when Triton kernels run on the CPU through its interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_reasons(device: torch.device, *, requested: bool) -> list[str]:
    """Why Triton kernels cannot run on ``device`` here (shared by the Triton engines). CPU tensors run
    through Triton's interpreter only when asked for by name (it is for tests: slow)."""
    if not triton_available():
        return ["triton is not importable (pip install 'arcloss[triton]')"]
    if device.type == "cuda" or (requested and device.type == "cpu" and triton_interpreted()):
        return []
    return [f"needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors), got device {device}"]
