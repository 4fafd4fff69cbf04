"""Lazy, explicit choice of the chunk-softmax implementation. Nothing is probed at import time."""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType

import torch

from . import _softmax_torch

BACKENDS = ("auto", "torch", "triton")


@functools.cache
def _triton_module() -> ModuleType | None:
    try:
        return importlib.import_module("arcloss._softmax_triton")
    except ImportError:
        return None


def triton_interpreted() -> bool:
    """True when Triton kernels run on the CPU through its interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve(backend: str, device: torch.device) -> str:
    """The backend that will run for tensors on ``device``: ``"torch"`` or ``"triton"``.

    ``"auto"`` picks Triton for CUDA tensors when it imports, else PyTorch. Asking for ``"triton"`` where it
    cannot run raises instead of silently falling back.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return "torch"
    usable_device = device.type == "cuda" or (device.type == "cpu" and triton_interpreted())
    if backend == "auto":
        return "triton" if device.type == "cuda" and _triton_module() is not None else "torch"
    if _triton_module() is None:
        raise RuntimeError("backend='triton' was requested but triton is not importable: pip install 'arcloss[triton]'")
    if not usable_device:
        raise ValueError(
            f"backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors), got device {device}"
        )
    return "triton"


def softmax_module(name: str) -> ModuleType:
    if name == "torch":
        return _softmax_torch
    module = _triton_module()
    if module is None:
        raise RuntimeError("triton is not importable")
    return module
