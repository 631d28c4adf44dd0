"""Shared test setup: quiet TensorFlow, deterministic seeds, the data folder."""

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DATA_DIR = pathlib.Path(
    os.environ.get(
        "KERAS_ATTREG_DATA",
        pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data",
    )
)


@pytest.fixture
def data_dir():
    """The real-data folder (`../shared/data` or $KERAS_ATTREG_DATA)."""
    if not (DATA_DIR / "mnist.npz").exists():
        pytest.skip(f"real data not found in {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
