"""The engine layer: the fused pass over embeddings, class centres and labels, and its implementations.

- :mod:`.plan`: the typed options of one pass (:class:`Plan`, :class:`ShardSpec`).
- :mod:`.registry`: the engines, what each supports, and the choice among them.
- :mod:`.chunked`: the chunked engine (PyTorch GEMMs, a chunk softmax from :mod:`.softmax_torch` or
  :mod:`.softmax_triton`).
- :mod:`.targets`: the exact target cosines, computed once per pass before the margin is applied.

Nothing here knows about margins or modules; see ``docs/architecture.md``.
"""

from __future__ import annotations

from .engine import Engine, EngineInputs, EngineOutputs, triton_available, triton_softmax
from .plan import Plan, ShardSpec, accumulation_dtype
from .registry import BACKENDS, ENGINES, PRIORITY, get_engine, resolve

__all__ = [
    "BACKENDS",
    "ENGINES",
    "PRIORITY",
    "Engine",
    "EngineInputs",
    "EngineOutputs",
    "Plan",
    "ShardSpec",
    "accumulation_dtype",
    "get_engine",
    "resolve",
    "triton_available",
    "triton_softmax",
]
