"""The setup factory for the speed/memory benchmark: one ``Case`` per (provider, problem size).

Providers (each a loss over ``N`` embeddings of width ``D`` and ``C`` classes, with its own parameters):

- ``arcloss`` / ``arcloss-triton``: :class:`arcloss.ArcFaceLoss` with ``backend="torch"`` / ``"triton"``.
- ``softmax``: plain ``nn.Linear(D, C, bias=False)`` + ``cross_entropy`` (the speed floor).
- ``norm-softmax``: cosine logits times ``s`` + ``cross_entropy`` (the "naive" normalised softmax).
- ``pml``: pytorch-metric-learning's ``ArcFaceLoss``, when installed.

``softmax`` and ``norm-softmax`` are the modules of :mod:`benchmarks.baselines`, shared with the face benchmark.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

import arcloss
from benchmarks.baselines import NormSoftmaxLoss, SoftmaxLoss

PROVIDERS = ("arcloss", "arcloss-triton", "softmax", "norm-softmax", "pml")


@dataclass
class Case:
    """One benchmark problem: ``loss()`` runs the forward; its result's ``backward()`` the backward."""

    loss: Callable[[], Tensor]
    params: list[Tensor]
    embeddings: Tensor

    def zero_grad(self) -> None:
        for tensor in [*self.params, self.embeddings]:
            tensor.grad = None


def available(provider: str, device: torch.device) -> bool:
    if provider == "pml":
        return importlib.util.find_spec("pytorch_metric_learning") is not None
    if provider == "arcloss-triton":
        return device.type == "cuda" and importlib.util.find_spec("triton") is not None
    return provider in PROVIDERS


def make_case(
    provider: str,
    num_classes: int,
    batch: int,
    dim: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Case:
    """Inputs and parameters for ``provider``, identical across providers for the same seed."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(batch, dim, generator=generator).to(device, dtype).requires_grad_()
    labels = torch.randint(0, num_classes, (batch,), generator=generator).to(device)
    scale = 64.0
    if provider in ("arcloss", "arcloss-triton"):
        backend = "torch" if provider == "arcloss" else "triton"
        module = arcloss.ArcFaceLoss(num_classes, dim, backend=backend, device=device, dtype=dtype)
        return Case(lambda: module(x, labels), [module.W], x)
    if provider == "softmax":
        softmax = SoftmaxLoss(num_classes, dim, bias=False, device=device, dtype=dtype)
        return Case(lambda: softmax(x, labels), [softmax.fc.weight], x)
    if provider == "norm-softmax":
        norm_softmax = NormSoftmaxLoss(num_classes, dim, scale, device=device, dtype=dtype)
        return Case(lambda: norm_softmax(x, labels), [norm_softmax.W], x)
    if provider == "pml":
        from pytorch_metric_learning.losses import ArcFaceLoss

        module = ArcFaceLoss(num_classes, dim, scale=scale).to(device, dtype)
        return Case(lambda: module(x, labels), [module.W], x)
    raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")
