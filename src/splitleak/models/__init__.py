"""Target networks, splitting, training and checkpoints."""

from splitleak.models.split import SplitModel, split_model, split_points
from splitleak.models.zoo import ARCHITECTURES, Architecture, get_architecture

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "SplitModel",
    "get_architecture",
    "split_model",
    "split_points",
]
