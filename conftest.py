"""Shared test setup: the real-data folder, and the doctests' names and folder.

Every `>>>` example in `keras_attreg` runs as a test (`--doctest-modules`). The
examples may use `np`, `tf`, `keras`, `kar`, a small CNN `model` (28x28x1 ->
10 logits) and real MNIST digits from the embedded sample (`x_train`,
`y_train`, `x_test`, `y_test`: standardised float32, NHWC), and `data_dir`
(`../shared/data` or `$KERAS_ATTREG_DATA`). They run in an
empty temporary folder, so the files they write are thrown away.
"""

import os
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from _pytest.doctest import DoctestItem

import keras_attreg as kar

DATA_DIR = pathlib.Path(
    os.environ.get(
        "KERAS_ATTREG_DATA",
        pathlib.Path(__file__).resolve().parent.parent / "shared" / "data",
    )
)


def _doctest_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv2"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, name="logits"),
        ]
    )


def _digits(split: str, count: int):
    x, y = kar.datasets.load_mnist_sample(split)
    x = kar.datasets.standardize(x[:count, ..., None].astype("float32") / 255, "mnist")
    return np.asarray(x, "float32"), y[:count].astype("int64")


def require_data(folder: pathlib.Path = DATA_DIR) -> pathlib.Path:
    """`folder` if it holds the real data; else the test is skipped, or, in
    CI (`CI=true`), failed: there a missing folder must not pass unnoticed."""
    if not (folder / "mnist.npz").exists():
        message = f"real data not found in {folder}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: the real-data tests must run)")
        pytest.skip(message)
    return folder


@pytest.fixture
def data_dir():
    """The real-data folder (`../shared/data` or $KERAS_ATTREG_DATA); see
    `require_data`."""
    return require_data()


@pytest.fixture(autouse=True)
def _doctest_setup(request, doctest_namespace, tmp_path, monkeypatch):
    if not isinstance(request.node, DoctestItem):
        return
    monkeypatch.chdir(tmp_path)
    x_train, y_train = _digits("train", 64)
    x_test, y_test = _digits("test", 32)
    doctest_namespace.update(
        np=np,
        tf=tf,
        keras=keras,
        kar=kar,
        model=_doctest_model(),
        data_dir=str(DATA_DIR),
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
    )
