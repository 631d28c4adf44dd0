"""Data: MNIST / CIFAR-10 / IMDB pipelines, the embedded MNIST sample, cluttered MNIST,
Decoy MNIST.

Imports nothing from the rest of `keras_attreg` (data flows one way).
"""

from keras_attreg.datasets.cluttered import ClutteredMNIST, make_cluttered_mnist
from keras_attreg.datasets.decoy import DecoyMNIST, make_decoy_mnist
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
from keras_attreg.datasets.text import load_imdb, standardize_review

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DATA_ENV_VAR",
    "MNIST_MEAN",
    "MNIST_STD",
    "ClutteredMNIST",
    "DecoyMNIST",
    "destandardize",
    "load_cifar10",
    "load_imdb",
    "load_mnist",
    "load_mnist_sample",
    "make_cluttered_mnist",
    "make_decoy_mnist",
    "standardize",
    "standardize_review",
]
