"""Class centres sharded over ``torch.distributed`` (model parallel), PartialFC sampling, checkpoints.

Sharding is an option of every loss module: ``ArcFaceLoss(C, D, sharding=Sharding(process_group=pg))``;
see :mod:`arcloss.distributed.sharding` for what a forward does and the gradient convention.
"""

from .checkpoints import gather_full_weight, load_full_weight_, shard_full_weight, to_single_process
from .sharding import Sharding, class_range

__all__ = [
    "Sharding",
    "class_range",
    "gather_full_weight",
    "load_full_weight_",
    "shard_full_weight",
    "to_single_process",
]
