"""The setup factory for the speed/memory benchmark: one ``Case`` per (provider, problem size, precision).

Providers (each a loss over ``N`` embeddings of width ``D`` and ``C`` classes, with its own parameters):

- ``arcloss`` / ``arcloss-triton`` / ``arcloss-triton-fused``: :class:`arcloss.ArcFaceLoss` with
  ``backend="torch"`` / ``"triton"`` / ``"triton-fused"`` (every arcloss engine).
- ``cosface``, ``subcenter``: :class:`arcloss.CosFaceLoss` and :class:`arcloss.SubCenterArcFaceLoss` (K = 3), on
  the automatic engine: the family on the same path.
- ``softmax``: plain ``nn.Linear(D, C, bias=False)`` + ``cross_entropy`` (the speed floor).
- ``norm-softmax``: cosine logits times ``s`` + ``cross_entropy`` (normalised softmax, no margin).
- ``naive`` / ``naive-compiled``: what users write for ArcFace (normalise, linear, ``acos``/``cos`` margin on the
  target column, ``cross_entropy``), eagerly and under ``torch.compile``.
- ``pml``: pytorch-metric-learning's ``ArcFaceLoss``, when installed.

Precision: ``fp32``, or ``bf16``/``fp16`` autocast around the loss (parameters stay float32, as in training).
``softmax`` and ``norm-softmax`` are the modules of :mod:`benchmarks.baselines`, shared with the face benchmark.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import arcloss
from benchmarks.baselines import NormSoftmaxLoss, SoftmaxLoss

PROVIDERS = (
    "arcloss",
    "arcloss-triton",
    "arcloss-triton-fused",
    "cosface",
    "subcenter",
    "softmax",
    "norm-softmax",
    "naive",
    "naive-compiled",
    "pml",
)
# What a CPU run measures by default: the Triton engines need CUDA, compiling is slow there, and the family
# members cost what ArcFace costs on the chunked engine.
CPU_DEFAULT = ("arcloss", "softmax", "norm-softmax", "pml")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_ENGINES = {"arcloss": "torch", "arcloss-triton": "triton", "arcloss-triton-fused": "triton-fused"}


@dataclass
class Case:
    """One benchmark problem: ``loss()`` runs the forward; its result's ``backward()`` the backward."""

    loss: Callable[[], Tensor]
    params: list[Tensor]
    embeddings: Tensor

    def zero_grad(self) -> None:
        for tensor in [*self.params, self.embeddings]:
            tensor.grad = None


def default_providers(device: torch.device) -> list[str]:
    return list(PROVIDERS if device.type == "cuda" else CPU_DEFAULT)


def available(provider: str, device: torch.device) -> bool:
    if provider == "pml":
        return importlib.util.find_spec("pytorch_metric_learning") is not None
    if provider in ("arcloss-triton", "arcloss-triton-fused"):
        return device.type == "cuda" and importlib.util.find_spec("triton") is not None
    return provider in PROVIDERS


class NaiveArcFace(nn.Module):
    """ArcFace as commonly written: normalised linear layer, ``cos(acos(c) + m)`` on the target, cross-entropy."""

    def __init__(self, num_classes: int, dim: int, margin_deg: float, scale: float, device, dtype) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(dim, num_classes, device=device, dtype=dtype))
        self.m, self.s = math.radians(margin_deg), scale

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        cos = nn.functional.normalize(x, dim=1) @ nn.functional.normalize(self.W, dim=0)
        target = cos.gather(1, labels[:, None]).float().clamp(-1 + 1e-7, 1 - 1e-7)
        theta = torch.acos(target)
        phi = torch.where(theta <= math.pi - self.m, torch.cos(theta + self.m), target - self.m * math.sin(self.m))
        logits = cos.float().scatter(1, labels[:, None], phi)
        return nn.functional.cross_entropy(self.s * logits, labels)


def make_case(
    provider: str,
    num_classes: int,
    batch: int,
    dim: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    precision: str = "fp32",
) -> Case:
    """Inputs and parameters for ``provider``, identical across providers for the same seed."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(batch, dim, generator=generator).to(device, dtype).requires_grad_()
    labels = torch.randint(0, num_classes, (batch,), generator=generator).to(device)
    scale = 64.0
    fn, params = _module(provider, num_classes, dim, scale, device, dtype)
    autocast_dtype = PRECISIONS[precision]

    def loss() -> Tensor:
        context = (
            torch.autocast(device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with context:
            return fn(x, labels)

    return Case(loss, params, x)


def _module(provider: str, num_classes: int, dim: int, scale: float, device, dtype):
    if provider in _ENGINES:
        module = arcloss.ArcFaceLoss(num_classes, dim, backend=_ENGINES[provider], device=device, dtype=dtype)
        return module, [module.W]
    if provider == "cosface":
        module = arcloss.CosFaceLoss(num_classes, dim, device=device, dtype=dtype)
        return module, [module.W]
    if provider == "subcenter":
        module = arcloss.SubCenterArcFaceLoss(num_classes, dim, sub_centers=3, device=device, dtype=dtype)
        return module, [module.W]
    if provider == "softmax":
        softmax = SoftmaxLoss(num_classes, dim, bias=False, device=device, dtype=dtype)
        return softmax, [softmax.fc.weight]
    if provider == "norm-softmax":
        norm_softmax = NormSoftmaxLoss(num_classes, dim, scale, device=device, dtype=dtype)
        return norm_softmax, [norm_softmax.W]
    if provider in ("naive", "naive-compiled"):
        naive = NaiveArcFace(num_classes, dim, 28.6, scale, device, dtype)
        return (naive if provider == "naive" else torch.compile(naive)), [naive.W]
    if provider == "pml":
        from pytorch_metric_learning.losses import ArcFaceLoss

        module = ArcFaceLoss(num_classes, dim, scale=scale).to(device, dtype)
        return module, [module.W]
    raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")
