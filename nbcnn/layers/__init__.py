"""The layers. Each has ``forward``/``backward`` and ``params``/``grads``; see ``Layer``."""

from .activations import Activation, LeakyReLU, ReLU, Sigmoid, Tanh
from .base import Layer
from .batchnorm import BatchNorm2D
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .residual import Residual
from .shape import Flatten

#: every layer class by name, for model files and architecture strings
REGISTRY = {cls.__name__: cls for cls in (Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Dense,
                                          ReLU, LeakyReLU, Sigmoid, Tanh, Flatten, Dropout,
                                          BatchNorm2D, Residual)}

__all__ = ["Layer", "Activation", "Conv2D", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "Dense",
           "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Flatten", "Dropout", "BatchNorm2D", "Residual",
           "REGISTRY"]
