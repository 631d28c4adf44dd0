"""FBI relevance regularisation on a residual network: CIFAR-10, baseline vs FBI.

Trains the same small ResNet with BatchNorm (a stem and three stages of two
basic blocks, widths 16-32-64, projection shortcuts where the shape changes:
a ResNet-14 in the CIFAR style of He et al.) twice per seed from the same
initial weights: with the cross-entropy only and with
L = (1 - lambda) L_TSK + lambda L_FBI (Yoo et al. 2019), the relevance pass
walking the residual graph (shortcut and branch relevance summed). The FBI
loss is switched on once validation accuracy exceeds --switch (the paper's
70% is out of reach of the CPU-size run; 0 starts it at once). Reports the
test accuracy, the FBI paper's Table 1 statistics (max and both skewness
definitions of the rectified activations of every convolution), and writes
the epsilon-LRP maps of both models for a few test images and a JSON summary
to --output-dir.

CPU-size default: 5,000 training images, 1,000 test images, 3 epochs, one
seed (about 10 minutes on two cores, more under load). Full size (GPU):

    python experiments/fbi_resnet.py --output-dir fbi_resnet_out \\
        --train-size 0 --test-size 0 --epochs 60 --switch 0.7 --seeds 0 1 2

CIFAR-10 is read from the TFRecords in --data-dir (default:
$KERAS_ATTREG_DATA, else ../shared/data next to the repository).

    python experiments/fbi_resnet.py --output-dir fbi_resnet_out
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
    train,
    training_batches,
    write_json,
)

import keras_attreg as kar

L = keras.layers


def basic_block(x, filters: int, stride: int, name: str):
    """conv-BN-ReLU-conv-BN plus the shortcut, then ReLU (ResNet v1)."""
    h = L.Conv2D(filters, 3, stride, "same", use_bias=False, name=f"{name}_conv1")(x)
    h = L.ReLU()(L.BatchNormalization(name=f"{name}_bn1")(h))
    h = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(h)
    h = L.BatchNormalization(name=f"{name}_bn2")(h)
    if stride != 1 or x.shape[-1] != filters:
        x = L.Conv2D(filters, 1, stride, use_bias=False, name=f"{name}_proj")(x)
        x = L.BatchNormalization(name=f"{name}_proj_bn")(x)
    return L.ReLU()(L.Add(name=f"{name}_add")([x, h]))


def small_resnet(widths=(16, 32, 64), blocks: int = 2) -> keras.Model:
    inputs = keras.Input((32, 32, 3))
    h = L.Conv2D(widths[0], 3, padding="same", use_bias=False, name="stem")(inputs)
    h = L.ReLU()(L.BatchNormalization(name="stem_bn")(h))
    for stage, filters in enumerate(widths):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            h = basic_block(h, filters, stride, f"s{stage}b{block}")
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, L.Dense(10, name="logits")(h), name="small_resnet")


def main() -> None:
    cli = parser(__doc__)
    cli.set_defaults(seeds=[0])
    cli.add_argument("--lam", type=float, default=0.01)
    cli.add_argument("--switch", type=float, default=0.0)
    cli.add_argument("--train-size", type=int, default=5000, help="0: all 50,000")
    cli.add_argument("--test-size", type=int, default=1000, help="0: all 10,000")
    cli.add_argument("--epochs", type=int, default=3)
    cli.add_argument("--batch-size", type=int, default=64)
    args = cli.parse_args()
    folder = output_dir(args.output_dir)
    start = time.perf_counter()
    test = kar.datasets.load_cifar10(
        "test", args.data_dir, batch_size=256, limit=args.test_size or None
    )
    x_shown, y_shown = arrays(test.unbatch().take(6).batch(6))
    x_stats, _ = arrays(test.unbatch().take(200).batch(200))
    runs = {"baseline": [], "fbi": []}
    for seed in args.seeds:
        train_ds = training_batches(
            kar.datasets.load_cifar10, args, seed, args.train_size or None
        )
        trained = {}
        for name in runs:
            keras.utils.set_random_seed(seed)
            regularizer = kar.FBILoss(lam=args.lam) if name == "fbi" else None
            callbacks = (
                [kar.DelayedActivation(threshold=args.switch)]
                if regularizer is not None and args.switch > 0
                else []
            )
            model, logs = train(
                small_resnet(),
                f"{name}_seed{seed}",
                folder,
                train_ds,
                test,
                args.epochs,
                regularizer=regularizer,
                callbacks=callbacks,
                verbose=args.verbose,
            )
            trained[name] = model
            statistics = kar.analysis.activation_statistics(
                kar.analysis.layer_activations(model, x_stats)
            )
            runs[name].append(
                {
                    "seed": seed,
                    "test_accuracy": logs["val_accuracy"],
                    "train_seconds": logs["train_seconds"],
                    "statistics": [s.__dict__ for s in statistics],
                }
            )
            print(f"{name} seed {seed}: test accuracy {logs['val_accuracy']:.4f}")
        if seed == args.seeds[0]:
            print(
                kar.analysis.statistics_table(
                    {
                        name: kar.analysis.activation_statistics(
                            kar.analysis.layer_activations(model, x_stats)
                        )
                        for name, model in trained.items()
                    }
                )
            )
            maps = {
                f"epsilon-LRP ({name})": kar.attributions.epsilon_lrp(
                    model, x_shown, y_shown
                )
                for name, model in trained.items()
            }
            kar.plotting.plot_attribution_maps(
                maps, folder / "lrp_maps.png", images=x_shown
            )
    summary = {
        name: {
            "test_accuracy": mean_spread([r["test_accuracy"] for r in rows]),
            "max_per_layer": np.mean(
                [[s["max"] for s in r["statistics"]] for r in rows], axis=0
            ).tolist(),
            "moment_skewness_per_layer": np.mean(
                [[s["moment_skewness"] for s in r["statistics"]] for r in rows], axis=0
            ).tolist(),
        }
        for name, rows in runs.items()
    }
    write_json(
        folder / "results.json",
        {
            "experiment": "fbi_resnet",
            "settings": vars(args),
            "per_seed": runs,
            "summary": summary,
            "seconds": time.perf_counter() - start,
        },
    )


if __name__ == "__main__":
    main()
