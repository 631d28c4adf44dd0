"""Test setup: quiet TensorFlow, a fixed seed before each test.

The `data_dir` fixture (real data) lives in the repository's root conftest.
"""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
