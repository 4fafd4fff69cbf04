"""What the Triton modules share: launching on the tensors' CUDA device, and telling the interpreter apart."""

from __future__ import annotations

import contextlib

import torch


def device_guard(device: torch.device) -> contextlib.AbstractContextManager:
    """Triton launches on the current CUDA device: make it ``device``'s."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def is_interpreted(kernel: object) -> bool:
    """Whether ``triton.jit`` made ``kernel`` for Triton's CPU interpreter (``TRITON_INTERPRET=1`` at import)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernel, InterpretedFunction)
