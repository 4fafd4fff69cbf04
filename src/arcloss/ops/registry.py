"""The engines, in the order ``backend="auto"`` tries them, and the choice among them.

Each engine declares :meth:`~arcloss.ops.engine.Engine.not_supported_reasons`. ``backend="auto"`` walks
:data:`PRIORITY` and takes the first engine with no reason; a named backend raises if it has any; when none
fits, the error lists every engine's reasons. Nothing is imported or probed before an engine is asked.

To add an engine: subclass :class:`~arcloss.ops.engine.Engine` and list it in :data:`ENGINES` (and in
:data:`PRIORITY` if ``"auto"`` may pick it). Modules, the functional API and the sharded path need no change.
"""

from __future__ import annotations

from torch import Tensor

from .chunked import TorchChunkedEngine, TritonChunkedEngine
from .engine import Engine
from .plan import Plan
from .whole_pass import TritonWholePassEngine

__all__ = ["BACKENDS", "ENGINES", "PRIORITY", "get_engine", "resolve"]

ENGINES: dict[str, Engine] = {
    engine.name: engine for engine in (TritonChunkedEngine(), TorchChunkedEngine(), TritonWholePassEngine())
}
# "triton-fused" is not yet in the automatic choice: it has been checked numerically (Triton interpreter) and
# compiled for sm_90, but not yet timed on a GPU against the chunked engines.
PRIORITY = ("triton", "torch")
BACKENDS = ("auto", *ENGINES)


def get_engine(name: str) -> Engine:
    return ENGINES[name]


def resolve(backend: str, x: Tensor, weight: Tensor, plan: Plan) -> str:
    """The engine that runs ``plan`` (whose ``engine`` field is ignored) for ``backend``.

    ``"auto"`` takes the first engine of :data:`PRIORITY` that supports the inputs; a named engine raises
    ``ValueError`` with its reasons if it does not. Nothing is synchronised.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    candidates = PRIORITY if backend == "auto" else (backend,)
    requested = backend != "auto"
    reasons = {
        name: get_engine(name).not_supported_reasons(x, weight, plan, requested=requested) for name in candidates
    }
    for name in candidates:
        if not reasons[name]:
            return name
    detail = "; ".join(f"{name}: {', '.join(why)}" for name, why in reasons.items())
    raise ValueError(f"backend={backend!r} cannot run these inputs ({detail})")
