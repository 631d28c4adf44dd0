"""Data: MNIST / CIFAR-10 pipelines, the embedded MNIST sample, cluttered MNIST.

Imports nothing from the rest of `keras_attreg` (data flows one way).
"""

from keras_attreg.datasets.cluttered import ClutteredMNIST, make_cluttered_mnist
from keras_attreg.datasets.loaders import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    DATA_ENV_VAR,
    MNIST_MEAN,
    MNIST_STD,
    destandardize,
    load_cifar10,
    load_mnist,
    load_mnist_sample,
    standardize,
)

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DATA_ENV_VAR",
    "MNIST_MEAN",
    "MNIST_STD",
    "ClutteredMNIST",
    "destandardize",
    "load_cifar10",
    "load_mnist",
    "load_mnist_sample",
    "make_cluttered_mnist",
    "standardize",
]
