"""Decoy MNIST: annotation masks in `fit` undo a learned shortcut (issue 19).

Ross, Hughes and Doshi-Velez (IJCAI 2017, "Right for the Right Reasons")
add a 4 x 4 swatch in a random corner of each MNIST digit, whose grey level
gives the class away in the training data (255 - 25 y) and is that of a
random class in the test data (`kar.datasets.make_decoy_mnist`). A model
that learns the swatch fails on the test data; the same model trained with
the swatch as annotation mask ("must not be the reason") should not. Each
model is trained from the same initial weights and data order per seed:

- `baseline`: plain cross-entropy;
- `rrr`: `kar.RRRPenalty` (Ross et al. Eq. 1);
- `masked_gradient`: `kar.MaskedGradientPenalty` (L1 of dS_c/dx in the mask);
- `masked_relevance`: `kar.MaskedRelevancePenalty` (epsilon-LRP, L1 in the mask);
- `expected_gradients`: `kar.ExpectedGradientsPenalty` (Erion et al., L1);
- `clean_reference`: the same model trained plainly on MNIST without the
  decoy (what it reaches when there is no shortcut to learn).

Models: Ross et al.'s MLP (2 x 50 ReLU, the headline) and a small CNN (two
3x3 convolutions with max pooling). Inputs are pixel / 255.

Each penalty's coefficient is chosen before the main runs, per model, on a
validation set that is not the test set: the last 5,000 training digits,
held out, with the test rule's random shades; training on the first 55,000
for the same epochs, seed 0, over a grid of three values (`--grid` in the
JSON); the coefficient with the best validation accuracy wins (ties within
0.002: the smaller). The main runs then train on all 60,000 digits.

Reported per run (`<output-dir>/runs/<model>_<penalty>_seed<s>.json`):
accuracy on the decoy test set (10,000 digits, random shades) and on the
clean MNIST test set; the wrong-reason score (`kar.evaluation.
wrong_reason_score`: share of |attribution| on the swatch, for the vanilla
gradient and gradient x input, over the decoy test set); the swatch-only
accuracy (the training rule's swatch on a blank image: 1.0 means the swatch
alone gives the class, 0.1 chance); epochs and wall time. The summary
(`results.json`) gives mean and seed spread per model and penalty; figures:
the gradient maps of every model on six decoy test digits (seed 0) and the
wrong-reason score per class.

CPU size (default): all 60,000 training digits, 20 epochs, Adam 1e-3, batch
256 (Ross et al.'s batch and step size), seeds 0 1 2, models mlp and cnn.
About 40 s per MLP run and several minutes per CNN run on a 2-core CPU.
The full-size setting is the same (Decoy MNIST is small); on a GPU add
seeds: `--seeds 0 1 2 3 4 5 6 7 8 9`. `--quick`: 2,000 digits, 1 epoch,
seed 0, the MLP only: checks the script end to end.

    python experiments/decoy_mnist.py --output-dir outputs/decoy_mnist
"""

from __future__ import annotations

import functools
import pathlib
import time

import keras
import numpy as np
import tensorflow as tf
from _common import cached, mean_spread, output_dir, parser, quick, train, write_json

import keras_attreg as kar

PENALTIES = {
    "rrr": (kar.RRRPenalty, "lam", (1.0, 10.0, 100.0)),
    "masked_gradient": (kar.MaskedGradientPenalty, "alpha", (0.1, 1.0, 10.0)),
    "masked_relevance": (kar.MaskedRelevancePenalty, "alpha", (0.1, 1.0, 10.0)),
    "expected_gradients": (kar.ExpectedGradientsPenalty, "alpha", (0.1, 1.0, 10.0)),
}
VALIDATION = 5000
TIE = 0.002
# Trained on MNIST without the decoy: what the model reaches when there is
# no shortcut to learn (a reference, not a competitor).
REFERENCE = "clean_reference"
TRAININGS = ["baseline", *PENALTIES, REFERENCE]


def build(model: str, seed: int) -> keras.Model:
    """Ross et al.'s MLP or the small CNN, initialised from `seed`."""
    keras.utils.set_random_seed(seed)
    if model == "mlp":
        layers = [
            keras.layers.Flatten(),
            keras.layers.Dense(50, activation="relu"),
            keras.layers.Dense(50, activation="relu"),
        ]
    else:
        layers = [
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
        ]
    return keras.Sequential(
        [keras.Input((28, 28, 1)), *layers, keras.layers.Dense(10)], name=model
    )


def load(data_dir) -> dict:
    """Decoy train / held-out validation / test, clean test and swatch-only
    images, as float arrays in [0, 1] with their masks."""
    with np.load(pathlib.Path(data_dir) / "mnist.npz") as mnist:
        x_train, y_train = mnist["x_train"], mnist["y_train"].astype("int64")
        x_test, y_test = mnist["x_test"], mnist["y_test"].astype("int64")
    train_set = kar.datasets.make_decoy_mnist(x_train, y_train, "train", seed=0)
    # Held-out digits with the test rule: the validation set for the choice
    # of coefficients (never the test set).
    held_out = kar.datasets.make_decoy_mnist(
        x_train[-VALIDATION:], y_train[-VALIDATION:], "test", seed=1
    )
    test_set = kar.datasets.make_decoy_mnist(x_test, y_test, "test", seed=2)
    blank = kar.datasets.make_decoy_mnist(np.zeros_like(x_test), y_test, "train", 3)

    def images(array):
        return (array[..., None] / 255.0).astype("float32")

    return {
        "train": (images(train_set.images), y_train, train_set.masks),
        "clean_train": images(x_train),
        "held_out": (images(held_out.images), held_out.labels, held_out.masks),
        "test": (images(test_set.images), y_test, test_set.masks),
        "clean": (images(x_test), y_test),
        "swatch_only": (images(blank.images), y_test),
    }


def batches(x, y, mask, batch_size, seed=None):
    """A dataset of `(x, kar.annotate(y, mask))` batches (shuffled with
    `seed`), of `(x, y)` when `mask` is None (the plain baseline)."""
    labels = y if mask is None else kar.annotate(y, mask)
    dataset = tf.data.Dataset.from_tensor_slices((x, labels))
    if seed is not None:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(2)


def accuracy(model, x, y) -> float:
    logits = model.predict(x, batch_size=1000, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def regularizer(penalty: str, coefficient: float):
    if penalty in ("baseline", REFERENCE):
        return None
    kind, argument, _ = PENALTIES[penalty]
    return kind(**{argument: coefficient})


def run(args, data, folder, model_name, penalty, coefficient, seed, split) -> dict:
    """Trains one model; its row of the report."""
    x, y, mask = data["train"]
    if split == "calibration":
        x, y, mask = x[:-VALIDATION], y[:-VALIDATION], mask[:-VALIDATION]
        val = data["held_out"]
    else:
        val = data["test"]
    x, y, mask = x[: args.train_size], y[: args.train_size], mask[: args.train_size]
    name = f"{split}_{model_name}_{penalty}_{coefficient:g}_seed{seed}"
    if penalty in ("baseline", REFERENCE):
        mask, val = None, (*val[:2], None)
    if penalty == REFERENCE:
        x = data["clean_train"][: args.train_size]
    base = build(model_name, seed)
    start = time.perf_counter()
    base, logs = train(
        base,
        name,
        folder,
        batches(x, y, mask, args.batch_size, seed),
        batches(*val, 1000),
        args.epochs,
        regularizer=regularizer(penalty, coefficient),
        verbose=args.verbose,
    )
    row = {
        "model": model_name,
        "penalty": penalty,
        "coefficient": coefficient,
        "seed": seed,
        "epochs": args.epochs,
        "train_examples": int(len(x)),
        "train_seconds": logs["train_seconds"],
        "wall_seconds": time.perf_counter() - start,
        "validation_accuracy": accuracy(base, *val[:2]),
    }
    if split == "calibration":
        return row
    base.save_weights(output_dir(folder / "models") / f"{name}.weights.h5")
    x_test, y_test, m_test = data["test"]
    row["decoy_test_accuracy"] = row.pop("validation_accuracy")
    row["clean_test_accuracy"] = accuracy(base, *data["clean"])
    row["swatch_only_accuracy"] = accuracy(base, *data["swatch_only"])
    for method in ("saliency", "gradient_x_input"):
        score = kar.evaluation.wrong_reason_score(
            base,
            (x_test[: args.score_size], y_test[: args.score_size]),
            m_test[: args.score_size],
            method=method,
        )
        row[f"wrong_reason_{method}"] = score.to_dict()
    return row


def choose(args, data, folder, model_name) -> dict:
    """The coefficient of each penalty, chosen on the held-out digits."""
    chosen = {}
    for penalty, (_, argument, grid) in PENALTIES.items():
        rows = [
            cached(
                folder / "calibration" / f"{model_name}_{penalty}_{c:g}.json",
                functools.partial(
                    run, args, data, folder, model_name, penalty, c, 0, "calibration"
                ),
            )
            for c in grid
        ]
        best = max(r["validation_accuracy"] for r in rows)
        pick = min(
            r["coefficient"] for r in rows if r["validation_accuracy"] >= best - TIE
        )
        chosen[penalty] = {
            "argument": argument,
            "coefficient": pick,
            "grid": {f"{r['coefficient']:g}": r["validation_accuracy"] for r in rows},
        }
        grid = chosen[penalty]["grid"]
        print(f"{model_name} {penalty}: {argument}={pick:g} ({grid})")
    return chosen


def figures(args, data, folder, model_name, chosen) -> None:
    """Gradient maps of each model of seed 0 on six decoy test digits, and the
    wrong-reason score per class."""
    x, y, mask = (array[:6] for array in data["test"])
    x_all, y_all, m_all = (a[: args.score_size] for a in data["test"])
    maps, scores = {}, []
    for penalty in ["baseline", *PENALTIES]:
        coefficient = chosen[penalty]["coefficient"] if penalty in chosen else 0.0
        base = build(model_name, 0)
        name = f"main_{model_name}_{penalty}_{coefficient:g}_seed0"
        base.load_weights(folder / "models" / f"{name}.weights.h5")
        maps[penalty] = kar.attributions.saliency(base, x, y)
        scores.append(kar.evaluation.wrong_reason_score(base, (x_all, y_all), m_all))
    kar.plotting.plot_attribution_maps(
        maps, folder / f"maps_{model_name}.png", images=x
    )
    scores[0].plot(
        folder / f"wrong_reason_{model_name}.png",
        *scores[1:],
        names=["baseline", *PENALTIES],
    )


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--models", nargs="+", default=["mlp", "cnn"])
    cli.add_argument("--epochs", type=int, default=20)
    cli.add_argument("--batch-size", type=int, default=256)
    cli.add_argument("--train-size", type=int, default=60000)
    cli.add_argument("--score-size", type=int, default=10000)
    args = quick(
        cli.parse_args(),
        epochs=1,
        train_size=2000,
        score_size=500,
        seeds=[0],
        models=["mlp"],
    )
    folder = output_dir(args.output_dir)
    data = load(args.data_dir)
    summary = {"settings": {k: v for k, v in vars(args).items() if k != "data_dir"}}
    for model_name in args.models:
        chosen = choose(args, data, folder, model_name)
        rows = []
        for seed in args.seeds:
            for penalty in TRAININGS:
                c = chosen[penalty]["coefficient"] if penalty in chosen else 0.0
                rows.append(
                    cached(
                        folder / "runs" / f"{model_name}_{penalty}_seed{seed}.json",
                        functools.partial(
                            run,
                            args,
                            data,
                            folder,
                            model_name,
                            penalty,
                            c,
                            seed,
                            "main",
                        ),
                    )
                )
        figures(args, data, folder, model_name, chosen)
        keys = (
            "decoy_test_accuracy",
            "clean_test_accuracy",
            "swatch_only_accuracy",
            "train_seconds",
        )
        summary[model_name] = {
            "chosen": chosen,
            "runs": {
                penalty: {
                    **{
                        key: mean_spread(
                            [r[key] for r in rows if r["penalty"] == penalty]
                        )
                        for key in keys
                    },
                    "wrong_reason_saliency": mean_spread(
                        [
                            r["wrong_reason_saliency"]["overall"]
                            for r in rows
                            if r["penalty"] == penalty
                        ]
                    ),
                    "wrong_reason_gradient_x_input": mean_spread(
                        [
                            r["wrong_reason_gradient_x_input"]["overall"]
                            for r in rows
                            if r["penalty"] == penalty
                        ]
                    ),
                }
                for penalty in TRAININGS
            },
        }
    write_json(folder / "results.json", summary)


if __name__ == "__main__":
    main()
