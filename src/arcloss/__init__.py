"""arcloss: exact, numerically safe, memory-lean angular-margin losses for PyTorch.

>>> from arcloss import ArcFaceLoss
>>> loss_fn = ArcFaceLoss(num_classes=10, embedding_size=4)
"""

from . import adaptive, functional, recipes, verification
from .adaptive import AdaFaceMargin, MagFaceMargin
from .losses import (
    AdaFaceLoss,
    ArcFaceLoss,
    CombinedMarginLoss,
    CosFaceLoss,
    MagFaceLoss,
    MarginLoss,
    SubCenterArcFaceLoss,
)
from .margins import AngularMargin, Margin

__version__ = "0.1.0"

__all__ = [
    "AdaFaceLoss",
    "AdaFaceMargin",
    "AngularMargin",
    "ArcFaceLoss",
    "CombinedMarginLoss",
    "CosFaceLoss",
    "MagFaceLoss",
    "MagFaceMargin",
    "Margin",
    "MarginLoss",
    "SubCenterArcFaceLoss",
    "__version__",
    "adaptive",
    "functional",
    "recipes",
    "verification",
]
