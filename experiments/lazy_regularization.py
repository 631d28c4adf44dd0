"""Lazy regularisation: what `every=k` costs in quality (issue 11).

`AttributionRegularizedModel(base, L1GradientPenalty(alpha), every=k)` runs
the penalised step on every k-th batch only, with the penalty's weight times
k, and plain steps in between (StyleGAN2's lazy regularisation): an epoch
costs about (k - 1 + r) / k plain epochs when a penalised step costs r. This
script measures what that does to the penalty's effect. The small MNIST CNN
of experiment 1 (without BatchNorm) is trained per seed as a plain baseline
and with the L1 gradient penalty for each k, all from the same initial
weights and data order. Per run (`<output-dir>/runs/<model>_seed<seed>.json`):
test accuracy, the mean L1 norm of the input gradient |dS_c/dx|_1 over the
Sensitivity-n digits, the modified Sensitivity-n (absolute Pearson) of the
vanilla gradient and its mean over n (`SN`), the `fit` wall time, and the
wall and process CPU seconds of each epoch's training batches (validation
excluded; the epochs after the first, which traces the step functions, give
the cost per epoch); the summary gives their mean and seed spread per model.

alpha = 0.01, chosen before any run and not tuned (experiment 2's value).

`--dataset cifar10`: the CIFAR-10 setting of experiment 2, trained by
`l1_alpha_sweep.py`'s own functions with its defaults (narrow VGG with
BatchNorm, the first 10,000 training images, flips and translations, 14
epochs with cosine decay, batch 128, all 10,000 test images, Sensitivity-n
over 50) at alpha = 0.001 with every in 2 4 8 16, seeds 0 1 2 (`--quick`:
every=4). The plain baseline and every=1 are the sweep's own runs (same
seeds, same initial weights), read from
`<sweep-dir>/runs/alpha0_seed<s>.json` and `alpha0.001_seed<s>.json`
(default `--sweep-dir`: `l1_alpha_sweep` beside the output directory) once
the lazy runs are trained, so they can train while the sweep still runs. Its
runs carry no per-epoch clock: the cost is the `fit` wall time, taken by
different processes under different loads.

CPU size (default): 5,000 training and 1,000 test digits, 3 epochs, batch 64,
k in 1 2 4 8 16, Sensitivity-n over 100 test digits, 50 subsets, 6 values of
n, seeds 0 1 2. `--quick`: one seed, k in 1 4 16, 2,000 training digits,
2 epochs, 50 digits for Sensitivity-n. A finished run is skipped on restart
(its training time kept) and a stopped one resumes from its last epoch.

    python experiments/lazy_regularization.py --output-dir outputs/lazy_regularization
    python experiments/lazy_regularization.py --dataset cifar10 \
        --output-dir outputs/lazy_regularization_cifar10
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import platform
import time

import keras
import numpy as np
from _common import (
    arrays,
    cached,
    gradient_report,
    mean_spread,
    output_dir,
    parser,
    quick,
    train,
    training_batches,
    write_json,
)
from _report import Section, change, load, pm, wall_time
from bn_noise import two_conv_cnn
from l1_alpha_sweep import load_data, mean_spread_rows, one_run, run_name, settings

import keras_attreg as kar


class EpochClock(keras.callbacks.Callback):
    """Wall and process CPU seconds of each epoch's training batches, from the
    first batch's start to the last one's end (validation excluded)."""

    def __init__(self):
        super().__init__()
        self.wall, self.cpu = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = None

    def on_train_batch_begin(self, batch, logs=None):
        if self._start is None:
            self._start = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, batch, logs=None):
        self._end = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        self.wall.append(self._end[0] - self._start[0])
        self.cpu.append(self._end[1] - self._start[1])


def model_names(ks) -> dict:
    """Model name -> `every` (0: the plain baseline)."""
    return {"baseline": 0, **{f"l1_every{k}": k for k in ks}}


def mnist_run(args, name: str, every: int, seed: int, data, folder) -> dict:
    """Trains one MNIST model (`every` = 0: plain) and scores it."""
    train_ds, test, (x_sn, y_sn), n_values = data
    keras.utils.set_random_seed(seed)
    clock = EpochClock()
    model, logs = train(
        two_conv_cnn(batchnorm=False),
        f"{name}_seed{seed}",
        folder,
        train_ds,
        test,
        args.epochs,
        regularizer=kar.L1GradientPenalty(args.alpha) if every else None,
        callbacks=[clock],
        verbose=args.verbose,
        every=every or 1,
    )
    row, sn = gradient_report(model, logs, seed, x_sn, y_sn, n_values, args.num_subsets)
    return {
        "model": name,
        "every": every,
        **row,
        "sensitivity_n_mean": float(np.mean(sn.correlation)),
        "epoch_wall_seconds": clock.wall,
        "epoch_cpu_seconds": clock.cpu,
        # Epochs after the first: no tracing of the step functions.
        "cpu_seconds_per_epoch": float(np.mean(clock.cpu[1:] or clock.cpu)),
        "wall_seconds_per_epoch": float(np.mean(clock.wall[1:] or clock.wall)),
    }


def sweep_settings(args, folder):
    """`l1_alpha_sweep.py`'s settings (its defaults, or its `--quick` ones)."""
    sweep_dir = args.sweep_dir or folder.parent / "l1_alpha_sweep"
    return settings(
        ["--output-dir", str(sweep_dir), "--data-dir", args.data_dir]
        + ["--verbose", str(args.verbose), "--seeds", *map(str, args.seeds)]
        + ["--quick"] * args.quick
    )


def cifar_runs(args, sweep, folder) -> list[dict]:
    """every=k trained here in the sweep's setting `sweep` (see the module
    docstring), then per seed the sweep's plain and every=1 runs and these.

    The sweep's runs are read after the training, so this can train while the
    sweep still runs.
    """
    sweep_dir = pathlib.Path(sweep.output_dir)
    output_dir(folder / "maps")
    data = None
    trained = {}
    for seed in sweep.seeds:
        for every in args.ks:
            path = folder / "runs" / f"l1_every{every}_seed{seed}.json"
            if data is None and not path.exists():
                data = load_data(sweep)
            trained[(every, seed)] = {
                "model": f"l1_every{every}",
                "every": every,
            } | cached(
                path,
                functools.partial(
                    one_run, sweep, args.alpha, seed, data, folder, every=every
                ),
            )
    runs = []
    for seed in sweep.seeds:
        for name, alpha in (("baseline", 0.0), ("l1_every1", args.alpha)):
            path = sweep_dir / "runs" / f"{run_name(alpha, seed)}.json"
            if not path.exists():
                raise FileNotFoundError(
                    f"{path} is missing: run experiments/l1_alpha_sweep.py "
                    f"--output-dir {sweep_dir} first (its alphas must include 0 "
                    f"and {args.alpha:g})"
                )
            runs.append(
                {"model": name, "every": int(alpha > 0), **json.loads(path.read_text())}
            )
        runs += [trained[(every, seed)] for every in args.ks]
    return runs


def summarise(runs: list[dict]) -> dict:
    """Mean and seed spread per model, in the order of `runs`."""
    summary = {}
    for name in dict.fromkeys(r["model"] for r in runs):
        rows = [r for r in runs if r["model"] == name]
        summary[name] = {
            "every": rows[0]["every"],
            "seeds": [r["seed"] for r in rows],
            **{
                key: mean_spread([r[key] for r in rows])
                for key in (
                    "test_accuracy",
                    "mean_l1_input_gradient",
                    "sensitivity_n_mean",
                    "train_seconds",
                    "cpu_seconds_per_epoch",
                    "wall_seconds_per_epoch",
                )
                # The sweep's runs (`--dataset cifar10`) have no clock.
                if all(key in r for r in runs)
            },
            "sensitivity_n_curve": mean_spread_rows(
                np.array([r["sensitivity_n"]["correlation"] for r in rows])
            ),
        }
    return summary


def mnist_runs(args, folder) -> list[dict]:
    """Every MNIST model of every seed, trained (or loaded) here."""
    test = kar.datasets.load_mnist(
        "test", args.data_dir, batch_size=256, limit=args.test_size
    )
    sn_data = arrays(test.unbatch().take(args.sn_samples).batch(256))
    n_values = np.unique(np.geomspace(1, args.n_max, args.n_points).round()).astype(int)
    runs = []
    for seed in args.seeds:
        train_ds = training_batches(
            kar.datasets.load_mnist, args, seed, args.train_size
        )
        data = (train_ds, test, sn_data, n_values)
        for name, every in model_names(args.ks).items():
            runs.append(
                cached(
                    folder / "runs" / f"{name}_seed{seed}.json",
                    functools.partial(mnist_run, args, name, every, seed, data, folder),
                )
            )
    return runs


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--dataset", choices=("mnist", "cifar10"), default="mnist")
    cli.add_argument(
        "--ks", type=int, nargs="+", help="default: 1 2 4 8 16 (cifar10: 2 4 8 16)"
    )
    cli.add_argument("--alpha", type=float, help="default: 0.01 (cifar10: 0.001)")
    cli.add_argument("--sweep-dir", help="cifar10: the L1 sweep's output directory")
    cli.add_argument("--train-size", type=int, default=5000)
    cli.add_argument("--test-size", type=int, default=1000)
    cli.add_argument("--epochs", type=int, default=3)
    cli.add_argument("--batch-size", type=int, default=64)
    cli.add_argument("--sn-samples", type=int, default=100)
    cli.add_argument("--num-subsets", type=int, default=50)
    cli.add_argument("--n-points", type=int, default=6)
    cli.add_argument("--n-max", type=int, default=300)
    args = cli.parse_args()
    mnist = args.dataset == "mnist"
    if args.ks is None:
        args.ks = [1, 2, 4, 8, 16] if mnist else [2, 4, 8, 16]
    if args.alpha is None:
        args.alpha = 0.01 if mnist else 0.001
    args = quick(
        args,
        seeds=args.seeds[:1],
        ks=[1, 4, 16] if mnist else [4],
        train_size=2000,
        epochs=2,
        sn_samples=50,
    )
    folder = output_dir(args.output_dir)
    start = time.perf_counter()
    sweep = None if mnist else sweep_settings(args, folder)
    runs = mnist_runs(args, folder) if mnist else cifar_runs(args, sweep, folder)
    for row in runs:
        print(
            f"{row['model']} seed {row['seed']}: accuracy {row['test_accuracy']:.4f}, "
            f"|dS/dx|_1 {row['mean_l1_input_gradient']:.3f}, "
            f"SN {row['sensitivity_n_mean']:.3f}"
        )
    summary = summarise(runs)
    print(f"\n{'model':<14}{'accuracy':>18}{'|dS/dx|_1':>18}{'SN':>16}{'time':>9}")
    for name, row in summary.items():
        print(
            f"{name:<14}"
            + "".join(
                f"{row[key]['mean']:>9.4f} ± {row[key]['std']:.4f}"
                for key in ("test_accuracy", "mean_l1_input_gradient")
            )
            + f"{row['sensitivity_n_mean']['mean']:>8.3f} ± "
            f"{row['sensitivity_n_mean']['std']:.3f}"
            f"{row['train_seconds']['mean']:>8.1f}s"
        )
    write_json(
        folder / "results.json",
        {
            "experiment": "lazy_regularization" + ("" if mnist else "_cifar10"),
            "dataset": args.dataset,
            "settings": vars(args) | ({} if mnist else {"sweep": vars(sweep)}),
            "n_values": runs[0]["sensitivity_n"]["n_values"],
            "runs": runs,
            "summary": summary,
            "seconds": time.perf_counter() - start,
        },
    )


def lazy_verdict(summary: dict) -> tuple[str, int | None, dict]:
    """The lazy-regularisation verdict (docs/VERDICT_RULES.md).

    Returns `(verdict, K, labels)`: K is the largest k such that every k' <= K
    keeps the effect and accuracy (None if none does), `labels[name]` the
    changes of a model against every=1 (`accuracy`, `l1`, `sn`: `(d, label)`).
    """
    one = summary["l1_every1"]
    keys = (("accuracy", "test_accuracy"), ("l1", "mean_l1_input_gradient"))
    keys += (("sn", "sensitivity_n_mean"),)
    labels = {
        name: {short: change(row[key], one[key]) for short, key in keys}
        for name, row in summary.items()
    }
    effect = [
        change(one[key], summary["baseline"][key])[1]
        for key in ("mean_l1_input_gradient", "sensitivity_n_mean")
    ]
    lazy = sorted(
        (row["every"], name) for name, row in summary.items() if row["every"] > 1
    )
    largest = None
    for every, name in lazy:
        kept = labels[name]
        if kept["l1"][1] != "within noise" or kept["sn"][1] != "within noise":
            break
        if kept["accuracy"][1] == "clearly down":
            break
        largest = every
    if all(label == "within noise" for label in effect):
        return "no effect to keep", largest, labels
    if largest is None:
        return "at no k > 1", None, labels
    return f"keeps the effect up to every={largest}", largest, labels


def report(result, outputs, docs) -> Section:
    """Section 7 (MNIST) or 7b (CIFAR-10) of docs/RESULTS.md."""
    settings, summary, runs = result["settings"], result["summary"], result["runs"]
    dataset = result["dataset"]
    number = "7" if dataset == "mnist" else "7b"
    base, one = summary["baseline"], summary["l1_every1"]
    seeds = base["seeds"]
    verdict, largest, labels = lazy_verdict(summary)
    # MNIST: CPU seconds per epoch; CIFAR-10 (plain and every=1 trained by the
    # sweep, without a clock): the `fit` wall time.
    clocked = "cpu_seconds_per_epoch" in base
    cost_key = "cpu_seconds_per_epoch" if clocked else "train_seconds"
    cpu = {name: row[cost_key]["mean"] for name, row in summary.items()}
    penalised_cost = cpu["l1_every1"] / cpu["baseline"]
    l1 = {(r["model"], r["seed"]): r["mean_l1_input_gradient"] for r in runs}
    reduction = {
        name: (
            base["mean_l1_input_gradient"]["mean"]
            - row["mean_l1_input_gradient"]["mean"]
        )
        / (
            base["mean_l1_input_gradient"]["mean"]
            - one["mean_l1_input_gradient"]["mean"]
        )
        for name, row in summary.items()
    }
    accuracy = {(r["model"], r["seed"]): r["test_accuracy"] for r in runs}
    above = {
        name: sum(l1[(name, s)] > l1[("l1_every1", s)] for s in seeds)
        for name, row in summary.items()
        if row["every"] > 1
    }
    below = {
        name: sum(accuracy[(name, s)] < accuracy[("l1_every1", s)] for s in seeds)
        for name in above
    }
    wall = wall_time(result["experiment"], result, load(outputs / "timings.json") or {})
    if dataset == "mnist":
        setting = (
            "the small MNIST CNN of section 1 without BatchNorm (conv 16, conv "
            "32, each ReLU and max pooling, dense 10) on the first "
            f"{settings['train_size']} training digits, {settings['epochs']} "
            f"epochs, batch {settings['batch_size']}, Adam 1e-3; test accuracy on "
            f"the first {settings['test_size']} test digits; the plain baseline "
            f"and the L1 gradient penalty at alpha = {settings['alpha']:g} (chosen "
            "before the runs, not tuned), the models of a seed trained one after "
            "the other, so the machine's load falls on all of them alike"
        )
        cost = (
            "the process CPU seconds of an epoch's training batches (validation "
            "excluded), mean over the epochs after the first (the first traces "
            "the step functions); CPU time, as in `benchmarks/step_time.py`, "
            "because wall-clock time moves with the other jobs' load"
        )
    else:
        sweep = settings["sweep"]
        setting = (
            f"`--dataset cifar10`: the setting of section 2 (`--arch "
            f"{sweep['arch']}`, the first {sweep['train_size'] or 50000} training "
            "images with flips and translations, batch "
            f"{sweep['batch_size']}, Adam cosine-decayed from 1e-3 over "
            f"{sweep['epochs']} epochs, test accuracy on "
            f"{sweep['test_size'] or 'all 10000'} test images), trained by "
            "`l1_alpha_sweep.py`'s own functions; the plain baseline and every=1 "
            "are the sweep's runs of section 2 at alpha = 0 and "
            f"{settings['alpha']:g}, the lazy models trained here at that alpha"
        )
        settings = {**settings, **{k: sweep[k] for k in ("sn_samples", "num_subsets")}}
        trained = sum(r["train_seconds"] for r in runs if r["every"] > 1)
        cost = (
            "the `fit` wall time. The plain and every=1 runs were timed by the "
            "sweep's process, the lazy ones by this script's, at other times "
            "and loads: these ratios are indicative only. The lazy runs' `fit` "
            f"times add up to {trained / 60:.1f} min"
        )
    lines = [
        f"## {number}. Lazy regularisation on "
        f"{'MNIST' if dataset == 'mnist' else 'CIFAR-10'}: "
        "`every=k` against quality (issue 11)",
        "",
        "`AttributionRegularizedModel(base, L1GradientPenalty(alpha), every=k)` "
        "runs the penalised step on every k-th batch only, with the penalty's "
        "weight times k, and plain steps in between (StyleGAN2's lazy "
        "regularisation). Question: which k keeps the penalty's effect, and at "
        "what training cost?",
        "",
        f"Ours: `experiments/lazy_regularization.py`, {setting}; every = "
        f"{', '.join(str(r['every']) for r in summary.values() if r['every'])}, "
        f"seeds {', '.join(map(str, seeds))} (per seed the same initial weights "
        "and data order for every model). "
        f"`L1` = the mean over the first {settings['sn_samples']} test images of "
        "|dS_c/dx|_1 (vanilla gradient of the true class, the penalty's own "
        "quantity); `SN` = the modified Sensitivity-n (|Pearson|) of that "
        f"gradient, {settings['num_subsets']} subsets per n, removed pixels set "
        f"to 0, n in {{{', '.join(map(str, result['n_values']))}}}, averaged over "
        f"n. Cost: {cost}. Machine: "
        f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs "
        f"(load average in the wall time), no GPU; wall time {wall}.",
        "",
        "Every run (model x seed):",
        "",
        "| model | seed | test accuracy | L1 | SN | `fit` wall time | training CPU "
        "s per epoch |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in summary:
        for r in sorted(
            (r for r in runs if r["model"] == name), key=lambda r: r["seed"]
        ):
            lines.append(
                f"| {name} | {r['seed']} | {r['test_accuracy']:.4f} "
                f"| {r['mean_l1_input_gradient']:.3f} | {r['sensitivity_n_mean']:.3f} "
                f"| {r['train_seconds']:.1f} s | "
                + (f"{r['cpu_seconds_per_epoch']:.2f} |" if clocked else "- |")
            )
    lines += [
        "",
        "Per model, mean ± std over seeds; the lazy models' change against "
        "every=1 with the rule's label (clearly up / down: beyond the larger "
        "seed std, docs/VERDICT_RULES.md). Share of the L1 effect: (L1 of plain "
        "- L1 of the model) / (L1 of plain - L1 of every=1). Cost: "
        + ("training CPU seconds per epoch" if clocked else "`fit` wall time")
        + ", relative to every=1 and to plain; expected: "
        f"(k - 1 + r) / k with r = {penalised_cost:.2f} the measured every=1 / "
        "plain ratio.",
        "",
        "| model | test accuracy | L1 | share of the L1 effect | SN | "
        + ("CPU s per epoch" if clocked else "`fit` wall time (s)")
        + " | / every=1 | / plain | expected / plain |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in summary.items():
        every = row["every"]
        cells = [
            pm(row[key], digits)
            + (
                f" ({labels[name][short][0]:+.{digits}f}, {labels[name][short][1]})"
                if every > 1
                else ""
            )
            for short, key, digits in (
                ("accuracy", "test_accuracy", 4),
                ("l1", "mean_l1_input_gradient", 3),
            )
        ]
        cells.append(f"{reduction[name]:.0%}" if every else "-")
        cells.append(
            pm(row["sensitivity_n_mean"])
            + (
                f" ({labels[name]['sn'][0]:+.3f}, {labels[name]['sn'][1]})"
                if every > 1
                else ""
            )
        )
        expected = (every - 1 + penalised_cost) / every if every else 1.0
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {pm(row[cost_key], 2 if clocked else 0)} "
            f"| {cpu[name] / cpu['l1_every1']:.2f}x "
            f"| {cpu[name] / cpu['baseline']:.2f}x | {expected:.2f}x |"
        )
    effect = {
        short: change(one[key], base[key])
        for short, key in (
            ("accuracy", "test_accuracy"),
            ("l1", "mean_l1_input_gradient"),
            ("sn", "sensitivity_n_mean"),
        )
    }
    kept_cost = cpu[f"l1_every{largest}"] / cpu["baseline"] if largest else None
    lines += [
        "",
        "Verdict (rule written before the run, docs/VERDICT_RULES.md):",
        "",
        f"- The penalty's effect (every=1 against plain): L1 "
        f"{effect['l1'][0]:+.3f} ({effect['l1'][1]}), SN {effect['sn'][0]:+.3f} "
        f"({effect['sn'][1]}); accuracy {effect['accuracy'][0]:+.4f} "
        f"({effect['accuracy'][1]}).",
        "- Per k > 1, effect kept (L1 and SN within noise of every=1) / accuracy "
        "kept (not clearly down against every=1): "
        + "; ".join(
            f"every={row['every']}: "
            + (
                "yes"
                if all(labels[name][s][1] == "within noise" for s in ("l1", "sn"))
                else "no ("
                + ", ".join(
                    f"{label} {labels[name][s][1]}"
                    for s, label in (("l1", "L1"), ("sn", "SN"))
                    if labels[name][s][1] != "within noise"
                )
                + ")"
            )
            + " / "
            + ("yes" if labels[name]["accuracy"][1] != "clearly down" else "no")
            for name, row in summary.items()
            if row["every"] > 1
        )
        + ".",
        "- Paired by seed (reported, not part of the rule): L1 of every=k above "
        "the same seed's every=1 in "
        + ", ".join(
            f"{above[name]}/{len(seeds)} seeds (every={summary[name]['every']})"
            for name in above
        )
        + "; accuracy below it in "
        + ", ".join(
            f"{below[name]}/{len(seeds)} (every={summary[name]['every']})"
            for name in below
        )
        + ".",
        f"- **Lazy regularisation: {verdict}**"
        + (
            f", at {kept_cost:.2f}x the plain baseline's "
            + ("training CPU time per epoch" if clocked else "`fit` wall time")
            + f" (every=1: {penalised_cost:.2f}x)."
            if kept_cost
            else "."
        ),
    ]
    cell = (
        f"{len(seeds)} seeds, plain -> every=1: L1 "
        f"{pm(base['mean_l1_input_gradient'], 2)} -> "
        f"{pm(one['mean_l1_input_gradient'], 2)}, SN "
        f"{pm(base['sensitivity_n_mean'])} -> {pm(one['sensitivity_n_mean'])}"
    )
    # The largest k kept, or every lazy k when none is.
    shown = [largest] if largest else [r["every"] for r in summary.values()]
    for every in (k for k in shown if k > 1):
        kept = summary[f"l1_every{every}"]
        cell += (
            f"; every={every}: L1 {pm(kept['mean_l1_input_gradient'], 2)} "
            f"({reduction[f'l1_every{every}']:.0%} of the L1 effect), SN "
            f"{pm(kept['sensitivity_n_mean'])}, accuracy "
            f"{pm(kept['test_accuracy'], 4)}"
        )
    cell += f" (every=1 accuracy {pm(one['test_accuracy'], 4)})"
    cell += (
        ("; training CPU time" if clocked else "; `fit` wall time (indicative)")
        + f" vs plain: every=1 {penalised_cost:.2f}x"
        + (f", every={largest} {kept_cost:.2f}x" if largest else "")
    )
    row = (
        f"| {number}. Lazy regularisation (`every=k`) keeps the L1 penalty's "
        f"effect, {'MNIST' if dataset == 'mnist' else 'CIFAR-10'} (issue 11; "
        "StyleGAN2) | R1 penalty every 16 minibatches at no loss (GANs) | "
        f"{cell} | {verdict} |"
    )
    return Section("\n".join(lines), [row])


if __name__ == "__main__":
    main()
