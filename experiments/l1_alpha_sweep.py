r"""Experiment 2: L1 gradient penalty, accuracy against attribution quality.

Kiritoshi et al. (2019) claim the penalty L' = L + alpha * |dS_c/dx|_1 raises
the modified Sensitivity-n (Fig. 4) "without affecting accuracy" (Table 1),
and give no alpha. This sweep gives the dose-response: the same VGG-style
BatchNorm CNN (`l1_penalty_cifar.vgg`) is trained on CIFAR-10 with standard
augmentation (random translation by up to 4 pixels, filled with 0 = the
training mean, and horizontal flips: Keras preprocessing layers in the
`tf.data` pipeline) for every alpha and seed, from the same initial weights
per seed. Adam with a cosine-decayed learning rate, so each run ends
levelled off; the learning curve of every run (accuracy on a fixed random
2,000 of the test images per epoch) is kept.

Per run (`<output-dir>/runs/alpha<alpha>_seed<seed>.json`): test accuracy on
all 10,000 test images, the modified Sensitivity-n (|Pearson| per n, the
paper's Fig. 4 setting; attributions: the signed vanilla gradient), its mean
over n, and the mean L1 norm of dS_c/dx. Figures: the Pareto front (accuracy
against mean Sensitivity-n, one point per alpha, seed std as error bars),
learning curves, Sensitivity-n curves per alpha, and the vanilla-gradient
maps of the first seed per alpha. A finished run is skipped on restart and a
stopped one resumes from its last epoch.

The localisation score of experiment 5 needs object boxes, which CIFAR-10
does not have; it is measured on cluttered MNIST in `localisation.py`.

Defaults are sized for a sweep of about 90 minutes on the 2-core CPU machine
(see docs/RESULTS.md for the wall time) with the runs levelled off:
`--arch small` (conv 2x16, 2x32, 2x64 with BatchNorm, dense 64), the first
10,000 training images, 14 epochs, batch 128, seeds 0 1 2, alpha in {0, 1e-4,
3e-4, 1e-3, 3e-3} (accuracy is clearly down from 1e-3 in a shorter run, so
the grid brackets it), Sensitivity-n over 50 test images. The report's runs
(docs/RESULTS.md, section 2) use 5 seeds at the alphas that settle the
accuracy question, and a constant learning rate beside the cosine one:

    python experiments/l1_alpha_sweep.py --output-dir outputs/l1_alpha_sweep \
        --alphas 0 1e-4 1e-3 --seeds 0 1 2 3 4
    python experiments/l1_alpha_sweep.py --output-dir outputs/l1_lr_schedule \
        --lr-schedule constant --alphas 0 1e-3 --seeds 0 1 2
    python experiments/l1_alpha_sweep.py --output-dir outputs/l1_quick --quick  # 1 min

Full size, for a GPU machine with TensorFlow (the paper's setting as far as
it is stated: VGG16 with BatchNorm on all of CIFAR-10, SGD; not yet run,
no such machine has been available to this project):

    python experiments/l1_alpha_sweep.py --output-dir outputs/l1_vgg16 \
        --arch vgg16 --train-size 0 --epochs 60 --batch-size 128 \
        --optimizer sgd --learning-rate 0.05 \
        --alphas 0 1e-4 3e-4 1e-3 --seeds 0 1 2 --sn-samples 100
"""

from __future__ import annotations

import json
import time

import keras
import matplotlib
import numpy as np
import tensorflow as tf
from _common import (
    arrays,
    cached,
    mean_spread,
    output_dir,
    parser,
    quick,
    train,
    write_json,
)
from l1_penalty_cifar import ARCHITECTURES, vgg

import keras_attreg as kar

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

ALPHAS = (0.0, 1e-4, 3e-4, 1e-3, 3e-3)


def run_name(alpha: float, seed: int, schedule: str = "cosine") -> str:
    suffix = "" if schedule == "cosine" else f"_{schedule}"
    return f"alpha{alpha:g}_seed{seed}{suffix}"


class LastEpochsAccuracy(keras.callbacks.Callback):
    """Accuracy on `(x, y)` after each of the last `count` epochs.

    Kept in a JSON file keyed by epoch, so a resumed run keeps what an
    earlier invocation measured (a constant learning rate leaves the
    accuracy moving from epoch to epoch: its mean over the last epochs is
    the run's accuracy).
    """

    def __init__(self, x, y, epochs: int, count: int, path):
        super().__init__()
        self.x, self.y, self.first, self.path = x, y, epochs - count, path

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.first:
            return
        logits = self.model.predict(self.x, batch_size=500, verbose=0)
        record = json.loads(self.path.read_text()) if self.path.exists() else {}
        record[str(epoch)] = float(np.mean(np.argmax(logits, -1) == self.y))
        self.path.write_text(json.dumps(record))


def augmented(x, y, batch_size: int, seed: int) -> tf.data.Dataset:
    """Shuffled batches, randomly translated (up to 1/8) and flipped."""
    augment = keras.Sequential(
        [
            keras.layers.RandomTranslation(
                0.125, 0.125, fill_mode="constant", fill_value=0.0, seed=seed
            ),
            keras.layers.RandomFlip("horizontal", seed=seed),
        ]
    )
    return (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed)
        .batch(batch_size)
        .map(lambda a, b: (augment(a, training=True), b), num_parallel_calls=2)
        .prefetch(2)
    )


def one_run(args, alpha, seed, data, folder, every: int = 1) -> dict:
    """Trains one (alpha, seed) model and scores it.

    `every` > 1: lazy regularisation (`AttributionRegularizedModel(every=...)`),
    its checkpoints and maps named with an `_every<k>` suffix.
    """
    (x_train, y_train), (x_test, y_test), (x_val, y_val), (x_sn, y_sn) = data
    steps = int(np.ceil(len(x_train) / args.batch_size)) * args.epochs
    name = run_name(alpha, seed, args.lr_schedule) + (
        f"_every{every}" if every > 1 else ""
    )
    last_epochs = folder / "checkpoints" / f"{name}_last_epochs.json"
    constant = args.lr_schedule == "constant"
    keras.utils.set_random_seed(seed)
    model, logs = train(
        vgg(args.arch),
        name,
        folder,
        augmented(x_train, y_train, args.batch_size, seed),
        tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(500),
        args.epochs,
        regularizer=kar.L1GradientPenalty(alpha) if alpha else None,
        learning_rate=args.learning_rate
        if constant
        else keras.optimizers.schedules.CosineDecay(args.learning_rate, steps),
        optimizer=args.optimizer,
        callbacks=[LastEpochsAccuracy(x_test, y_test, args.epochs, 3, last_epochs)]
        if constant
        else [],
        verbose=args.verbose,
        every=every,
    )
    logits = model.predict(x_test, batch_size=500, verbose=0)
    accuracy = float(np.mean(np.argmax(logits, -1) == y_test))
    last = json.loads(last_epochs.read_text()) if constant else {}
    gradient = kar.attributions.saliency(model, x_sn, y_sn, absolute=False)
    n_values = np.unique(np.geomspace(1, args.n_max, args.n_points).round())
    sn = kar.evaluation.sensitivity_n(
        model,
        (x_sn, y_sn),
        gradient,
        n_values=n_values.astype(int),
        num_subsets=args.num_subsets,
        absolute=True,
        seed=seed,
        verbose=0,
    )
    if seed == args.seeds[0]:
        np.save(folder / "maps" / f"{name}.npy", gradient[:6])
    return {
        "alpha": alpha,
        "seed": seed,
        # Constant rate: the mean over the last 3 epochs (the final epoch's
        # accuracy is kept as `final_test_accuracy`).
        "test_accuracy": float(np.mean(list(last.values()))) if last else accuracy,
        "final_test_accuracy": accuracy,
        "last_epochs_test_accuracy": last,
        "lr_schedule": args.lr_schedule,
        "train_seconds": logs["train_seconds"],
        "learning_curve": logs["history"],
        "mean_l1_input_gradient": float(np.abs(gradient).sum(axis=(1, 2, 3)).mean()),
        "sensitivity_n": sn.to_dict(),
        "sensitivity_n_mean": float(np.mean(sn.correlation)),
    }


def summarise(runs: list[dict]) -> dict:
    """Mean and seed spread per alpha."""
    summary = {}
    for alpha in sorted({r["alpha"] for r in runs}):
        rows = [r for r in runs if r["alpha"] == alpha]
        curves = np.array([r["sensitivity_n"]["correlation"] for r in rows])
        summary[f"{alpha:g}"] = {
            "alpha": alpha,
            "seeds": [r["seed"] for r in rows],
            "test_accuracy": mean_spread([r["test_accuracy"] for r in rows]),
            "sensitivity_n_mean": mean_spread([r["sensitivity_n_mean"] for r in rows]),
            "mean_l1_input_gradient": mean_spread(
                [r["mean_l1_input_gradient"] for r in rows]
            ),
            "sensitivity_n_curve": mean_spread_rows(curves),
        }
    return summary


def mean_spread_rows(values: np.ndarray) -> dict:
    """Mean and sample std over the first axis (std 0 with one row)."""
    spread = values.std(0, ddof=1) if len(values) > 1 else np.zeros(values.shape[1:])
    return {"mean": values.mean(0).tolist(), "std": spread.tolist()}


def save(figure, axis, title: str, path, legend: bool = True) -> None:
    """Titles the figure, adds the legend, writes it as a PNG and closes it."""
    axis.set_title(title)
    if legend:
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_pareto(summary: dict, path) -> None:
    figure, axis = plt.subplots(figsize=(5.5, 4))
    for key, row in summary.items():
        sn, acc = row["sensitivity_n_mean"], row["test_accuracy"]
        axis.errorbar(
            sn["mean"], acc["mean"], xerr=sn["std"], yerr=acc["std"], fmt="o", capsize=3
        )
        axis.annotate(
            f"alpha={key}",
            (sn["mean"], acc["mean"]),
            textcoords="offset points",
            xytext=(5, 5),
            fontsize=8,
        )
    axis.set_xlabel("modified Sensitivity-n (mean |Pearson| over n)")
    axis.set_ylabel("test accuracy (10,000 images)")
    save(figure, axis, "L1 gradient penalty: mean ± std over seeds", path, False)


def plot_learning_curves(runs: list[dict], path) -> None:
    figure, axis = plt.subplots(figsize=(6, 4))
    alphas = sorted({r["alpha"] for r in runs})
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(alphas)))
    for alpha, colour in zip(alphas, colours, strict=True):
        for i, run in enumerate(r for r in runs if r["alpha"] == alpha):
            curve = run["learning_curve"]["val_accuracy"]
            axis.plot(
                np.arange(1, len(curve) + 1),
                curve,
                color=colour,
                alpha=0.8,
                label=f"alpha={alpha:g}" if i == 0 else None,
            )
    axis.set_xlabel("epoch")
    axis.set_ylabel("accuracy, 2,000 test images")
    save(figure, axis, "Learning curves (one line per seed)", path)


def plot_sensitivity_n(summary: dict, n_values, path) -> None:
    figure, axis = plt.subplots(figsize=(6, 4))
    for key, row in summary.items():
        curve = row["sensitivity_n_curve"]
        axis.errorbar(
            n_values,
            curve["mean"],
            yerr=curve["std"],
            label=f"alpha={key}",
            capsize=2,
            marker="o",
            markersize=3,
        )
    axis.set_xscale("log")
    axis.set_xlabel("n (pixels removed)")
    axis.set_ylabel("|Pearson|, mean over seeds")
    save(figure, axis, "Modified Sensitivity-n of the vanilla gradient", path)


def settings(argv=None):
    """The sweep's settings from the command line `argv` (None: sys.argv)."""
    cli = parser(__doc__)
    cli.add_argument("--arch", choices=tuple(ARCHITECTURES), default="small")
    cli.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS))
    cli.add_argument("--train-size", type=int, default=10000, help="0: all 50,000")
    cli.add_argument("--test-size", type=int, default=0, help="0: all 10,000")
    cli.add_argument("--val-size", type=int, default=2000)
    cli.add_argument("--epochs", type=int, default=14)
    cli.add_argument("--batch-size", type=int, default=128)
    cli.add_argument("--sn-samples", type=int, default=50)
    cli.add_argument("--num-subsets", type=int, default=100)
    cli.add_argument("--n-points", type=int, default=8)
    cli.add_argument("--n-max", type=int, default=1000)
    cli.add_argument(
        "--lr-schedule",
        choices=("cosine", "constant"),
        default="cosine",
        help="the learning rate cosine-decayed to 0, or constant (accuracy "
        "then the mean over the last 3 epochs)",
    )
    cli.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    cli.add_argument(
        "--learning-rate", type=float, default=1e-3, help="initial (cosine) rate"
    )
    return quick(
        cli.parse_args(argv),
        alphas=[0.0, 1e-2],
        seeds=[0],
        train_size=256,
        test_size=300,
        val_size=100,
        epochs=1,
        sn_samples=4,
        num_subsets=8,
        n_points=3,
        n_max=100,
    )


def load_data(args) -> tuple:
    """`(train, test, validation, Sensitivity-n)` pairs `(x, y)` of the sweep."""
    x_train, y_train = arrays(
        kar.datasets.load_cifar10(
            "train", args.data_dir, batch_size=1000, limit=args.train_size or None
        )
    )
    # The test file is grouped by class after its first 1,000 images: a
    # fixed random subset, never a prefix, when fewer than all are used.
    x_test, y_test = arrays(
        kar.datasets.load_cifar10("test", args.data_dir, batch_size=1000)
    )
    order = np.random.default_rng(0).permutation(len(x_test))
    x_test, y_test = x_test[order], y_test[order]
    if args.test_size:
        x_test, y_test = x_test[: args.test_size], y_test[: args.test_size]
    return (
        (x_train, y_train),
        (x_test, y_test),
        (x_test[: args.val_size], y_test[: args.val_size]),
        (x_test[: args.sn_samples], y_test[: args.sn_samples]),
    )


def main() -> None:
    args = settings()
    folder = output_dir(args.output_dir)
    output_dir(folder / "maps")
    start = time.perf_counter()
    data = load_data(args)
    runs = [
        cached(
            folder / "runs" / f"{run_name(alpha, seed, args.lr_schedule)}.json",
            lambda alpha=alpha, seed=seed: one_run(args, alpha, seed, data, folder),
        )
        for seed in args.seeds
        for alpha in args.alphas
    ]
    summary = summarise(runs)
    n_values = runs[0]["sensitivity_n"]["n_values"]
    plot_pareto(summary, folder / "pareto.png")
    plot_learning_curves(runs, folder / "learning_curves.png")
    plot_sensitivity_n(summary, n_values, folder / "sensitivity_n.png")
    first = args.seeds[0]
    kar.plotting.plot_attribution_maps(
        {
            f"alpha={alpha:g}": np.load(
                folder / "maps" / f"{run_name(alpha, first, args.lr_schedule)}.npy"
            )
            for alpha in args.alphas
        },
        folder / "maps.png",
        images=data[3][0][:6],
    )
    write_json(
        folder / "results.json",
        {
            "experiment": "l1_alpha_sweep",
            "settings": vars(args),
            "n_values": n_values,
            "runs": runs,
            "summary": summary,
            "train_seconds": sum(r["train_seconds"] for r in runs),
            "seconds": time.perf_counter() - start,
        },
    )


if __name__ == "__main__":
    main()
