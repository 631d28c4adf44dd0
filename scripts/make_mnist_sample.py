"""Writes keras_attreg/datasets/mnist_sample.npz, the packaged MNIST sample.

The sample is the first 5,000 training and the first 1,000 test digits of MNIST
(LeCun, Cortes and Burges), copied pixel-exact (uint8) from a full `mnist.npz`
(`x_train`, `y_train`, `x_test`, `y_test`) and stored compressed (about 1 MB).

Usage, from the repository root:

    python scripts/make_mnist_sample.py --data-dir ../shared/data
"""

import argparse
import pathlib

import numpy as np

NUM_TRAIN = 5000
NUM_TEST = 1000
OUTPUT = (
    pathlib.Path(__file__).resolve().parents[1]
    / "keras_attreg"
    / "datasets"
    / "mnist_sample.npz"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder with mnist.npz")
    args = parser.parse_args()
    with np.load(pathlib.Path(args.data_dir) / "mnist.npz") as mnist:
        np.savez_compressed(
            OUTPUT,
            x_train=mnist["x_train"][:NUM_TRAIN],
            y_train=mnist["y_train"][:NUM_TRAIN],
            x_test=mnist["x_test"][:NUM_TEST],
            y_test=mnist["y_test"][:NUM_TEST],
        )
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
