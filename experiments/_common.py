"""Helpers shared by the experiment scripts: flags, training with resume, JSON.

Every experiment script writes its figures (PNG) and numbers (JSON) under
--output-dir. Trained weights are kept in `<output-dir>/checkpoints/`: a run
that is stopped resumes from the last finished epoch (Keras
`BackupAndRestore`), and a model that finished training is loaded instead of
trained again, so re-running a script after a crash only redoes what is left.
The per-epoch logs (the learning curve) are appended to
`<output-dir>/checkpoints/<name>.csv` and survive a resume.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import time

import keras
import numpy as np

import keras_attreg as kar

DEFAULT_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with the flags every experiment shares."""
    result = argparse.ArgumentParser(
        description=doc.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=doc,
    )
    result.add_argument(
        "--data-dir",
        default=os.environ.get(kar.datasets.DATA_ENV_VAR, str(DEFAULT_DATA)),
        help="folder with mnist.npz and cifar10-*.tfrecord "
        "(default: $KERAS_ATTREG_DATA, else ../shared/data)",
    )
    result.add_argument("--output-dir", required=True)
    result.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run per seed"
    )
    result.add_argument("--verbose", type=int, default=2, help="Keras fit verbosity")
    result.add_argument(
        "--quick",
        action="store_true",
        help="a tiny slice in about a minute: checks that the script runs "
        "end to end (its numbers mean nothing)",
    )
    return result


def quick(args: argparse.Namespace, **tiny) -> argparse.Namespace:
    """With `--quick`, replaces the settings named in `tiny` by their values."""
    if args.quick:
        for key, value in tiny.items():
            setattr(args, key, value)
    return args


def cached(path, compute) -> dict:
    """The JSON at `path` if a finished run wrote it, else `compute()`, written.

    Sweeps call this once per run, so a restarted sweep skips what finished.
    """
    path = pathlib.Path(path)
    if path.exists():
        print(f"skipping finished run {path}")
        return json.loads(path.read_text())
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    return result


def output_dir(path) -> pathlib.Path:
    folder = pathlib.Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
    """Concatenates a batched `(x, y)` dataset into two NumPy arrays."""
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in dataset), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def training_batches(load, args: argparse.Namespace, seed: int, limit):
    """The "train" split of a `kar.datasets` loader (e.g. `load_mnist`) from
    `args.data_dir`, shuffled with `seed`, in batches of `args.batch_size`,
    its first `limit` examples (None: all)."""
    return load(
        "train",
        args.data_dir,
        batch_size=args.batch_size,
        shuffle=True,
        seed=seed,
        limit=limit,
    )


def write_json(path, payload) -> None:
    pathlib.Path(path).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")


def train(
    base: keras.Model,
    name: str,
    folder: pathlib.Path,
    train_data,
    val_data,
    epochs: int,
    regularizer=None,
    callbacks=(),
    learning_rate=1e-3,
    verbose: int = 2,
    every: int = 1,
    optimizer: str = "adam",
) -> tuple[keras.Model, dict]:
    """Trains `base` (wrapped when a regulariser is given), resuming if stopped.

    Args:
        base: the classifier, ending in logits.
        name: file stem of its checkpoints under `folder / "checkpoints"`.
        folder: the experiment's output folder.
        train_data, val_data: `tf.data` datasets of `(x, y)` batches.
        epochs: training epochs.
        regularizer: None (plain training) or a `kar.AttributionRegularizer`.
        callbacks: extra Keras callbacks (e.g. `kar.DelayedActivation`).
        learning_rate: the learning rate (a float or a Keras schedule).
        verbose: `fit` verbosity (2: one line per epoch).
        every: the regularised step on every `every`-th batch only (lazy
            regularisation, `AttributionRegularizedModel(every=...)`).
        optimizer: `"adam"`, or `"sgd"` (momentum 0.9, weight decay 5e-4:
            the usual VGG recipe on CIFAR-10).

    Returns:
        `(base, logs)`: the trained base model and the final epoch's logs plus
        the training time in seconds (`train_seconds`, 0 when loaded), the
        per-epoch logs (`history`: key -> list over epochs) and, with a
        regulariser, the epoch its weight was switched on
        (`regularizer_start_epoch`, 0 without `DelayedActivation`).
    """
    checkpoints = output_dir(folder / "checkpoints")
    final = checkpoints / f"{name}.weights.h5"
    logs_file = checkpoints / f"{name}.json"
    curve_file = checkpoints / f"{name}.csv"
    model = (
        base
        if regularizer is None
        else kar.AttributionRegularizedModel(base, regularizer=regularizer, every=every)
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate)
        if optimizer == "adam"
        else keras.optimizers.SGD(learning_rate, momentum=0.9, weight_decay=5e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    if final.exists() and logs_file.exists():
        model.load_weights(final)
        print(f"loaded finished model {final}")
        return base, {**json.loads(logs_file.read_text()), "train_seconds": 0.0}
    print(f"--- training {name} ({epochs} epochs)")
    start = time.perf_counter()
    history = model.fit(
        train_data,
        validation_data=val_data,
        epochs=epochs,
        verbose=verbose,
        callbacks=[
            keras.callbacks.BackupAndRestore(str(checkpoints / f"{name}_backup")),
            keras.callbacks.CSVLogger(str(curve_file), append=True),
            *callbacks,
        ],
    )
    seconds = time.perf_counter() - start
    model.save_weights(final)
    logs = {key: float(values[-1]) for key, values in history.history.items()}
    logs["history"] = learning_curve(curve_file)
    if regularizer is not None:
        logs["regularizer_start_epoch"] = int(model.regularizer_start_epoch.numpy())
    logs_file.write_text(json.dumps(logs, indent=2))
    return base, {**logs, "train_seconds": seconds}


def learning_curve(path) -> dict:
    """Per-epoch logs from a `CSVLogger` file, one row per epoch.

    A run resumed after a crash may log an epoch twice; the last row wins.
    """
    with open(path, newline="") as handle:
        rows = {int(row["epoch"]): row for row in csv.DictReader(handle)}
    keys = [k for k in next(iter(rows.values())) if k != "epoch"] if rows else []
    return {k: [float(rows[e][k]) for e in sorted(rows)] for k in keys}


def gradient_report(model, logs: dict, seed: int, x, y, n_values, num_subsets: int):
    """One model's row of a penalty experiment, and its Sensitivity-n result.

    The row holds the seed, the test accuracy and training time from `logs`
    (as `train` returns them), the mean L1 norm of the vanilla gradient
    dS_c/dx over `(x, y)`, and the modified Sensitivity-n (absolute Pearson)
    of that gradient (`sensitivity_n.to_dict()`).
    """
    gradient = kar.attributions.saliency(model, x, y, absolute=False)
    sn = kar.evaluation.sensitivity_n(
        model,
        (x, y),
        gradient,
        n_values=n_values,
        num_subsets=num_subsets,
        absolute=True,
        seed=seed,
        verbose=0,
    )
    row = {
        "seed": seed,
        "test_accuracy": logs["val_accuracy"],
        "train_seconds": logs["train_seconds"],
        "mean_l1_input_gradient": float(np.abs(gradient).sum(axis=(1, 2, 3)).mean()),
        "sensitivity_n": sn.to_dict(),
    }
    return row, sn


def mean_spread(values) -> dict:
    """Mean, sample standard deviation and the values, for JSON reports."""
    values = np.asarray(values, dtype=float)
    spread = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return {"mean": float(values.mean()), "std": spread, "values": values.tolist()}
