"""Experiment 1: BatchNorm makes gradient maps noisy (Kiritoshi et al. 2019, Sec. 3.1).

The same small CNN (two convolutions, one dense layer; paper, Sec. 3.1) is
trained on real MNIST with and without BatchNormalization after each
convolution, once per seed. For each model:

(a) maps of the vanilla gradient, integrated gradients and SmoothGrad of a
    few test digits (first seed), `maps_with_bn.png` / `maps_without_bn.png`;
(b) the zero-pixel probe: for every test digit and every pixel that is zero
    (background), set it to one and record the change of the pre-softmax
    output, `keras_attreg.evaluation.bn_probe.zero_pixel_probe`. "Zero" and
    "one" are the standardised pixel values 0 and 1. The paper's Fig. 2 shows
    the distribution of the changes wider with BatchNorm; we report its
    standard deviation, also divided by the spread (std) of the model's own
    logits over the same digits, a scale-free width, and plot the histograms
    (`probe_histogram.png`).

CPU size (default, about 4 minutes on 2 cores): 5,000 training digits,
3 epochs, probe over 100 test digits (about 60,000 probes per model), seeds
0 1 2. Full size: `--train-size 60000 --epochs 10 --probe-samples 1000`.

    python experiments/bn_noise.py --output-dir outputs/bn_noise
"""

from __future__ import annotations

import time

import keras
import numpy as np
from _common import (
    arrays,
    mean_spread,
    output_dir,
    parser,
    quick,
    train,
    training_batches,
    write_json,
)
from _report import Section, figure, pm
from matplotlib.figure import Figure

import keras_attreg as kar
from keras_attreg.evaluation import zero_pixel_probe


def two_conv_cnn(batchnorm: bool) -> keras.Sequential:
    """Conv-[BN]-ReLU-pool twice, then one dense layer giving the logits.

    BatchNorm momentum 0.9: with a few hundred steps, the default 0.99 leaves
    the moving statistics far from the data.
    """
    layers = [keras.Input((28, 28, 1))]
    for filters in (16, 32):
        layers.append(keras.layers.Conv2D(filters, 3, padding="same"))
        if batchnorm:
            layers.append(keras.layers.BatchNormalization(momentum=0.9))
        layers += [keras.layers.ReLU(), keras.layers.MaxPooling2D()]
    layers += [keras.layers.Flatten(), keras.layers.Dense(10)]
    return keras.Sequential(layers)


def plot_histograms(changes: dict, path) -> None:
    figure = Figure(figsize=(5, 3.5))
    ax = figure.subplots()
    limit = max(np.quantile(np.abs(v), 0.999) for v in changes.values())
    bins = np.linspace(-limit, limit, 121)
    for label, values in changes.items():
        ax.hist(values, bins=bins, histtype="step", density=True, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("change of the pre-softmax output (zero pixel set to one)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--train-size", type=int, default=5000)
    cli.add_argument("--test-size", type=int, default=1000)
    cli.add_argument("--probe-samples", type=int, default=100)
    cli.add_argument("--epochs", type=int, default=3)
    cli.add_argument("--batch-size", type=int, default=64)
    args = quick(
        cli.parse_args(),
        seeds=[0],
        train_size=300,
        test_size=100,
        probe_samples=4,
        epochs=1,
    )
    folder = output_dir(args.output_dir)
    start = time.perf_counter()

    test = kar.datasets.load_mnist(
        "test", args.data_dir, batch_size=256, limit=args.test_size
    )
    x_test, y_test = arrays(test)
    zero, one = kar.datasets.standardize(np.float32([[0.0], [1.0]]), "mnist")[:, 0]
    probe_x = x_test[: args.probe_samples]

    runs = {"with_bn": [], "without_bn": []}
    changes = {}
    for seed in args.seeds:
        train_ds = training_batches(
            kar.datasets.load_mnist, args, seed, args.train_size
        )
        for key in runs:
            keras.utils.set_random_seed(seed)
            model, logs = train(
                two_conv_cnn(batchnorm=key == "with_bn"),
                f"{key}_seed{seed}",
                folder,
                train_ds,
                test,
                args.epochs,
                verbose=args.verbose,
            )
            probe = zero_pixel_probe(model, probe_x, zero, one, verbose=0)
            logit_std = float(np.std(model.predict(probe_x, verbose=0)))
            summary = probe.to_dict()
            runs[key].append(
                {
                    "seed": seed,
                    "test_accuracy": logs["val_accuracy"],
                    "train_seconds": logs["train_seconds"],
                    "probe": summary,
                    "logit_std": logit_std,
                    "relative_std": summary["std"] / logit_std,
                }
            )
            print(
                f"{key} seed {seed}: accuracy {logs['val_accuracy']:.4f}, probe std "
                f"{summary['std']:.4f} (relative {summary['std'] / logit_std:.4f})"
            )
            if seed == args.seeds[0]:
                changes[key.replace("_", " ")] = probe.differences.ravel()
                shown, labels = x_test[:6], y_test[:6]
                maps = {
                    "vanilla gradient": kar.attributions.saliency(model, shown, labels),
                    "integrated gradients": kar.attributions.integrated_gradients(
                        model, shown, labels, baseline=zero
                    ),
                    "SmoothGrad": kar.attributions.smoothgrad(model, shown, labels),
                }
                kar.plotting.plot_attribution_maps(
                    maps, folder / f"maps_{key}.png", images=shown
                )

    plot_histograms(changes, folder / "probe_histogram.png")
    result = {
        "experiment": "bn_noise",
        "settings": vars(args),
        "per_seed": runs,
        "summary": {
            key: {
                "test_accuracy": mean_spread([r["test_accuracy"] for r in rows]),
                "probe_std": mean_spread([r["probe"]["std"] for r in rows]),
                "probe_mean_abs": mean_spread([r["probe"]["mean_abs"] for r in rows]),
                "relative_std": mean_spread([r["relative_std"] for r in rows]),
            }
            for key, rows in runs.items()
        },
        "wider_with_bn_per_seed": [
            a["probe"]["std"] > b["probe"]["std"]
            for a, b in zip(runs["with_bn"], runs["without_bn"], strict=True)
        ],
        "relatively_wider_with_bn_per_seed": [
            a["relative_std"] > b["relative_std"]
            for a, b in zip(runs["with_bn"], runs["without_bn"], strict=True)
        ],
        "seconds": time.perf_counter() - start,
    }
    write_json(folder / "results.json", result)


def report(result, outputs, docs) -> Section:
    """Section 1 of docs/RESULTS.md (BatchNorm and noisy maps)."""
    s = result["summary"]
    wider = result["wider_with_bn_per_seed"]
    relative = result["relatively_wider_with_bn_per_seed"]
    verdict = (
        "reproduced"
        if all(wider) and all(relative)
        else "partly"
        if any(wider) or any(relative)
        else "not reproduced"
    )
    seeds = len(wider)
    ratio = s["with_bn"]["probe_std"]["mean"] / s["without_bn"]["probe_std"]["mean"]
    lines = [
        "## 1. BatchNorm makes gradient maps noisy (Kiritoshi et al. 2019, Sec. 3.1)",
        "",
        "Paper: a CNN of two conv layers and one dense layer on MNIST; attribution "
        "maps of the BatchNorm model are noisy (Fig. 1), and the change of the "
        "pre-softmax output when a zero pixel is set to one is distributed more "
        "widely with BatchNorm (Fig. 2, qualitative: no number given).",
        "",
        f"Ours ({seeds} seeds, mean ± std over seeds; "
        f"{result['settings']['train_size']} training digits, "
        f"{result['settings']['epochs']} epochs, probe over "
        f"{result['settings']['probe_samples']} test digits, "
        f"{result['per_seed']['with_bn'][0]['probe']['probes']} probes per model "
        "in the first seed):",
        "",
        "| model | test accuracy | std of output change | mean abs change "
        "| std / std of logits |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, label in (("with_bn", "with BatchNorm"), ("without_bn", "without")):
        row = s[key]
        lines.append(
            f"| {label} | {pm(row['test_accuracy'])} | {pm(row['probe_std'])} "
            f"| {pm(row['probe_mean_abs'])} | {pm(row['relative_std'])} |"
        )
    lines += [
        "",
        f"Wider with BatchNorm in {sum(wider)}/{seeds} seeds (raw std, "
        f"{ratio:.2f}x on average) and in {sum(relative)}/{seeds} seeds after "
        "dividing by the spread of each model's own logits (so the effect is not "
        f"only a larger logit scale). **Verdict: {verdict}.**",
        "",
        figure(
            outputs,
            docs,
            "bn_noise/probe_histogram.png",
            "bn_probe_histogram.png",
            "Distribution of output changes, first seed (paper: Fig. 2).",
        ),
        figure(
            outputs,
            docs,
            "bn_noise/maps_with_bn.png",
            "bn_maps_with_bn.png",
            "Maps of the BatchNorm model (paper: Fig. 1, left).",
        ),
        figure(
            outputs,
            docs,
            "bn_noise/maps_without_bn.png",
            "bn_maps_without_bn.png",
            "Maps of the model without BatchNorm (paper: Fig. 1, centre).",
        ),
    ]
    row = (
        "| 1. BatchNorm widens the zero-pixel probe (L1 paper, Fig. 2) | wider "
        f"with BN | std of output change {pm(s['with_bn']['probe_std'])} with BN vs "
        f"{pm(s['without_bn']['probe_std'])} without ({sum(wider)}/{seeds} seeds) "
        f"| {verdict} |"
    )
    return Section("\n".join(lines), [row])


if __name__ == "__main__":
    main()
