"""The whole-pass Triton engine: one set of kernels tiled over rows x classes, gradients by recomputation.

The kernels and their design are in :mod:`arcloss.ops.triton_whole_pass`; this module declares what the
engine supports and adapts it to the :class:`~arcloss.ops.engine.Engine` seam.
"""

from __future__ import annotations

import importlib
from typing import ClassVar

import torch
from torch import Tensor

from .engine import Engine, EngineInputs, EngineOutputs, triton_reasons
from .plan import Plan

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class TritonWholePassEngine(Engine):
    """Rows x classes tiles with ``tl.dot``, online softmax, two recomputing gradient passes (CUDA)."""

    name: ClassVar[str] = "triton-fused"

    def not_supported_reasons(self, x: Tensor, weight: Tensor, plan: Plan, *, requested: bool) -> list[str]:
        reasons = triton_reasons(x.device, requested=requested)
        if plan.sub_centers > 1:
            reasons.append("sub-centres are not supported")
        for name, tensor in (("embeddings", x), ("class centres", weight)):
            if tensor.dtype not in _DTYPES:
                reasons.append(f"{name} must be float16, bfloat16, float32 or float64, got {tensor.dtype}")
        if weight.shape[1] == 0:
            reasons.append("no classes")
        return reasons

    def run(self, inputs: EngineInputs, plan: Plan) -> EngineOutputs:
        kernels = importlib.import_module("arcloss.ops.triton_whole_pass")
        loss, grad_x, grad_w, grad_target = kernels.whole_pass_margin_ce(
            inputs.x,
            inputs.weight,
            inputs.labels,
            inputs.target_logit,
            inputs.target_slope,
            inputs.row_weight,
            inputs.scale,
            want_grad_x=inputs.want_grad_x,
            want_grad_w=inputs.want_grad_w,
            matmul_dtype=plan.matmul_dtype,
            reduce_stats=None if plan.shard is None else plan.shard.reduce_stats,
        )
        return EngineOutputs(loss, grad_x, grad_w, grad_target)
