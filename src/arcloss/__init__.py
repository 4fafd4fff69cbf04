"""arcloss: exact, numerically safe, memory-lean angular-margin losses for PyTorch.

>>> from arcloss import ArcFaceLoss
>>> loss_fn = ArcFaceLoss(num_classes=10, embedding_size=4)
"""

from . import functional, recipes, verification
from .losses import ArcFaceLoss, CombinedMarginLoss, CosFaceLoss, MarginLoss, SubCenterArcFaceLoss
from .margins import AngularMargin, Margin

__version__ = "0.1.0"

__all__ = [
    "AngularMargin",
    "ArcFaceLoss",
    "CombinedMarginLoss",
    "CosFaceLoss",
    "Margin",
    "MarginLoss",
    "SubCenterArcFaceLoss",
    "__version__",
    "functional",
    "recipes",
    "verification",
]
