"""Experiment 11: what FBI changes in a text transformer (issue 22).

Experiment 10's two-block text transformer on IMDB (same data, sizes and
training), per training seed: a baseline and FBI (Yoo et al. 2019) at each
lambda, from the same initial weights and data order, FBI switched on once
validation accuracy exceeds 0.70 (`kar.DelayedActivation`). Each trained model
is scored on the first 2,000 test reviews (accuracy, the lambda-free FBI loss)
and on experiment 10's evaluated reviews: the signed Sensitivity-n of CP-LRP
(`epsilon_lrp`, the relevance pass FBI trains through) and of gradient*input,
the same subsets for every model, every sample kept; the deletion area of
CP-LRP; the share of CP-LRP's absolute relevance on each review's 10% most
relevant tokens. Judged by docs/VERDICT_RULES.md (experiment 11).

Outputs in --output-dir: `runs/<name>.json` per trained model (a rerun skips
finished ones), `results.json`; weights in `checkpoints/`. `report` writes
section 11 of docs/RESULTS.md (`reproduce_all.py`).

    python experiments/transformer_fbi.py --output-dir outputs/transformer_fbi
    python experiments/transformer_fbi.py --output-dir runs/fq --quick
"""

from __future__ import annotations

import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import arrays, cached, output_dir, parser, train, write_json  # noqa: E402
from _report import VERDICT_ORDER, Section, load, wall_time  # noqa: E402
from transformer_faithfulness import (  # noqa: E402
    EPS,
    AddPosition,
    method,
    paired,
    sizes,
    text_data,
    text_transformer,
)

import keras_attreg as kar  # noqa: E402
from keras_attreg.relevance import EpsilonRule, register_rule  # noqa: E402

LAMBDAS = (0.001, 0.1)
THRESHOLD = 0.70  # the paper's switch, and experiment 10's "it learned" bar
TOP = 0.10  # concentration: the share of relevance on the top 10% of tokens


def concentration(maps: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per review, the share of its absolute relevance on its ceil(10%) real
    tokens of largest absolute relevance (padding left out), (samples,)."""
    shares = []
    for values, tokens in zip(np.abs(maps), ids, strict=True):
        real = np.sort(values[tokens != 0])[::-1]
        top = int(np.ceil(TOP * len(real)))
        shares.append(real[:top].sum() / real.sum() if real.sum() > 0 else np.nan)
    return np.array(shares)


def score(model, args, test_ds, x, y, n_values) -> dict:
    """Accuracy, L_FBI, Sensitivity-n, deletion and concentration of a model."""
    x_test, y_test = arrays(test_ds)
    logits = model.predict(x_test, batch_size=256, verbose=0)
    probe = kar.AttributionRegularizedModel(model, kar.FBILoss())
    probe.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    row = {
        "test_accuracy": float(np.mean(np.argmax(logits, -1) == y_test)),
        "test_fbi_loss": float(
            probe.evaluate(test_ds, return_dict=True, verbose=0)["fbi_loss"]
        ),
        "sensitivity_n": {},
    }
    for name in ("epsilon_lrp", "gradient_x_input"):
        maps = np.asarray(method(name, args.quick)(model, x, y))
        result = kar.evaluation.sensitivity_n(
            model,
            (x, y),
            maps,
            n_values=n_values,
            num_subsets=args.subsets,
            seed=0,
            verbose=0,
        )
        row["sensitivity_n"][name] = {
            "correlation": result.correlation.tolist(),
            "per_sample": [
                [None if np.isnan(v) else float(v) for v in sample]
                for sample in result.per_sample
            ],
        }
        if name == "epsilon_lrp":
            row["deletion_area"] = (
                kar.evaluation.deletion(model, (x, y), maps).areas().tolist()
            )
            row["concentration"] = concentration(maps, x).tolist()
    return row


def run(args, seed: int, lam: float, data, folder) -> dict:
    """Trains one model (baseline if lam is 0) of `seed` and scores it."""
    train_ds, test_ds, x, y, n_values = data
    model = text_transformer(args.vocabulary_size, args.sequence_length, seed)
    switch = [kar.DelayedActivation("val_accuracy", args.threshold)] if lam else []
    model, logs = train(
        model,
        run_name(seed, lam),
        folder,
        train_ds,
        test_ds,
        args.epochs["text_transformer"],
        regularizer=kar.FBILoss(lam=lam) if lam else None,
        callbacks=switch,
        verbose=args.verbose,
    )
    return {
        "seed": seed,
        "lam": lam,
        "train_seconds": logs["train_seconds"],
        "switched_on_at_epoch": logs.get("regularizer_start_epoch"),
        "epochs": args.epochs["text_transformer"],
        "final_loss": logs.get("loss"),
        "history": logs["history"],
        **score(model, args, test_ds, x, y, n_values),
    }


def run_name(seed: int, lam: float) -> str:
    return f"lam{lam:g}_seed{seed}"


def curves(row: dict, name: str) -> np.ndarray:
    """The per-sample Sensitivity-n curves of `name`, (samples, n) with NaN
    where undefined."""
    return np.array(row["sensitivity_n"][name]["per_sample"], float)


def judge(runs: dict, seeds, lambdas) -> dict:
    """The verdict of docs/VERDICT_RULES.md (experiment 11) per lambda."""
    out = {}
    for lam in lambdas:
        per_seed = []
        for seed in seeds:
            base, fbi = runs[run_name(seed, 0.0)], runs[run_name(seed, lam)]
            entry = {
                "seed": seed,
                "accuracy_difference": fbi["test_accuracy"] - base["test_accuracy"],
                "fbi_loss_lower": fbi["test_fbi_loss"] < base["test_fbi_loss"],
                "trains": bool(
                    fbi["final_loss"] is not None
                    and np.isfinite(fbi["final_loss"])
                    and fbi["switched_on_at_epoch"] is not None
                    and 0 <= fbi["switched_on_at_epoch"] < fbi["epochs"]
                    and fbi["test_accuracy"] >= THRESHOLD
                ),
            }
            for name in ("epsilon_lrp", "gradient_x_input"):
                entry[name] = paired(curves(fbi, name), curves(base, name))
            entry["deletion"] = paired(
                np.array(fbi["deletion_area"])[:, None],
                np.array(base["deletion_area"])[:, None],
            )
            entry["concentration"] = paired(
                np.array(fbi["concentration"])[:, None],
                np.array(base["concentration"])[:, None],
            )
            c = entry["epsilon_lrp"]
            entry["label"] = (
                "more"
                if c["d"] > 2 * c["se"]
                else "less"
                if c["d"] < -2 * c["se"]
                else "none"
            )
            per_seed.append(entry)
        accuracy = [e["accuracy_difference"] for e in per_seed]
        labels = [e["label"] for e in per_seed]
        trains = all(e["trains"] for e in per_seed)
        if np.mean(accuracy) < -0.01 and all(a < 0 for a in accuracy):
            cost = "costs accuracy"
        elif np.mean(accuracy) > 0.01 and all(a > 0 for a in accuracy):
            cost = "gains accuracy"
        else:
            cost = "no change shown"
        reduced = all(e["fbi_loss_lower"] for e in per_seed)
        if labels.count("more") >= 2 and "less" not in labels:
            faithful = "more faithful"
        elif labels.count("less") >= 2 and "more" not in labels:
            faithful = "less faithful"
        else:
            faithful = "no change shown"
        if (
            trains
            and cost != "costs accuracy"
            and reduced
            and faithful == "more faithful"
        ):
            verdict = VERDICT_ORDER[2]
        elif (
            trains
            and cost != "costs accuracy"
            and (reduced or faithful == "more faithful")
        ):
            verdict = VERDICT_ORDER[1]
        else:
            verdict = VERDICT_ORDER[0]
        out[f"{lam:g}"] = {
            "per_seed": per_seed,
            "trains": trains,
            "accuracy": cost,
            "mean_accuracy_difference": float(np.mean(accuracy)),
            "fbi_loss_reduced": reduced,
            "faithfulness": faithful,
            "verdict": verdict,
        }
    return out


def main() -> None:
    start = time.perf_counter()
    cli = parser(__doc__)
    cli.add_argument("--lambdas", type=float, nargs="+", default=list(LAMBDAS))
    cli.add_argument("--eval-samples", type=int, default=None)
    args = sizes(cli.parse_args())
    args.threshold = 0.5 if args.quick else THRESHOLD  # quick: exercise the switch
    folder = output_dir(args.output_dir)
    runs = {}
    with register_rule(AddPosition, EpsilonRule(EPS)):  # x + w: w is a bias
        for seed in args.seeds:
            args.seed = seed
            _, train_ds, test_ds, x, y, n_values = text_data(args)
            data = (train_ds, test_ds, x, y, n_values)
            for lam in (0.0, *args.lambdas):
                name = run_name(seed, lam)
                runs[name] = cached(
                    folder / "runs" / f"{name}.json",
                    lambda lam=lam, seed=seed, data=data: run(
                        args, seed, lam, data, folder
                    ),
                )
    result = {
        "setup": {**vars(args), "lambdas": args.lambdas, "n_values": n_values},
        "runs": runs,
        "judgement": judge(runs, args.seeds, args.lambdas),
        "seconds": time.perf_counter() - start,
    }
    write_json(folder / "results.json", result)
    for line in table(result):
        print(line)


def table(result: dict) -> list[str]:
    """The Markdown tables: per lambda and seed, FBI minus the baseline."""
    lines = [
        "| lambda | seed | switch on (epoch) | accuracy base -> FBI | L_FBI base -> "
        "FBI | CP-LRP Sensitivity-n d ± se | gradient*input d ± se | CP-LRP "
        "deletion area d ± se | top-10% share d ± se | train time FBI / base |",
        "| --- " * 10 + "|",
    ]
    runs = result["runs"]
    for lam, judged in result["judgement"].items():
        for entry in judged["per_seed"]:
            seed = entry["seed"]
            base, fbi = runs[run_name(seed, 0.0)], runs[run_name(seed, float(lam))]
            ratio = (
                f"{fbi['train_seconds'] / base['train_seconds']:.2f}"
                if base["train_seconds"] and fbi["train_seconds"]
                else "(loaded)"
            )
            cells = [
                f"{entry[k]['d']:+.4f} ± {entry[k]['se']:.4f}"
                for k in (
                    "epsilon_lrp",
                    "gradient_x_input",
                    "deletion",
                    "concentration",
                )
            ]
            lines.append(
                f"| {lam} | {seed} | {fbi['switched_on_at_epoch']} | "
                f"{base['test_accuracy']:.3f} -> {fbi['test_accuracy']:.3f} | "
                f"{base['test_fbi_loss']:.4g} -> {fbi['test_fbi_loss']:.4g} | "
                + " | ".join(cells)
                + f" | {ratio} |"
            )
    lines.append("")
    for lam, judged in result["judgement"].items():
        lines.append(
            f"- lambda = {lam}: trains: {'yes' if judged['trains'] else 'no'}; "
            f"accuracy: {judged['accuracy']} (mean difference "
            f"{judged['mean_accuracy_difference']:+.4f}); L_FBI reduced in every "
            f"seed: {'yes' if judged['fbi_loss_reduced'] else 'no'}; CP-LRP by "
            f"Sensitivity-n: {judged['faithfulness']} (seeds: "
            + ", ".join(e["label"] for e in judged["per_seed"])
            + f"). **Verdict: {judged['verdict']}.**"
        )
    return lines


def reading(result: dict) -> list[str]:
    """What the table says beside the verdict, and what it cannot say."""
    runs, lines = result["runs"], []

    def count(judged, key, sign):
        """Seeds whose paired d of `key` is beyond 2 se on `sign`'s side."""
        return sum(sign * e[key]["d"] > 2 * e[key]["se"] for e in judged["per_seed"])

    for lam, judged in result["judgement"].items():
        change = [
            runs[run_name(e["seed"], float(lam))]["test_fbi_loss"]
            / runs[run_name(e["seed"], 0.0)]["test_fbi_loss"]
            - 1
            for e in judged["per_seed"]
        ]
        seeds = len(judged["per_seed"])
        lines.append(
            f"- lambda = {lam}: L_FBI changed by "
            + ", ".join(f"{100 * c:+.1f}%" for c in change)
            + " (per seed); CP-LRP's Sensitivity-n beyond 2 se: higher in "
            f"{count(judged, 'epsilon_lrp', 1)} of {seeds} seeds, lower in "
            f"{count(judged, 'epsilon_lrp', -1)}; gradient*input's: higher in "
            f"{count(judged, 'gradient_x_input', 1)}, lower in "
            f"{count(judged, 'gradient_x_input', -1)}; CP-LRP's deletion area "
            "(lower is more faithful) lower in "
            f"{count(judged, 'deletion', -1)}, higher in "
            f"{count(judged, 'deletion', 1)}; the top-10% share higher in "
            f"{count(judged, 'concentration', 1)}, lower in "
            f"{count(judged, 'concentration', -1)}."
        )
    return lines + [
        "- The switch column is the 0-based epoch from which FBI was on (1: the "
        "second and third of three epochs). The train-time ratio is not a cost "
        "figure: the runs shared the 2 cores with test runs; `benchmarks/"
        "fbi_graph.py` gives FBI's step cost on this model (docs/benchmarks.md).",
        "- What the rule cannot say: three seeds, one architecture, one data "
        "size, two lambdas; FBI acted for two epochs; the validation set that "
        "switches FBI on is the test set's first reviews (as in section 10).",
    ]


def report(result, outputs, docs) -> Section:
    """Section 11 of docs/RESULTS.md (what FBI changes in a text transformer)."""
    setup = result["setup"]
    wall = wall_time("transformer_fbi", result, load(outputs / "timings.json") or {})
    lines = [
        "## 11. What FBI changes in a text transformer (Yoo et al. 2019; issue 22)",
        "",
        "Paper: FBI (Yoo et al., CVPR-W 2019) promises more meaningful relevance "
        "maps at no accuracy cost, on CNNs. Through attention the relevance pass is "
        "CP-LRP (section 10), so the maps FBI acts on are CP-LRP's. Judged by the "
        "rule of docs/VERDICT_RULES.md (experiment 11), written before the run.",
        "",
        "Ours: `experiments/transformer_fbi.py`: section 10's text transformer and "
        "data, per training seed "
        f"({', '.join(map(str, setup['seeds']))}) a baseline and FBI at lambda "
        f"{', '.join(f'{v:g}' for v in setup['lambdas'])} from the same initial "
        "weights and data order, FBI switched on once validation accuracy exceeds "
        f"{setup['threshold']:.2f} (`kar.DelayedActivation`; validation = the first "
        f"{setup['test_samples']} test reviews, as in section 10), "
        f"{setup['epochs']['text_transformer']} epochs. Scored: accuracy and the "
        "lambda-free L_FBI on those reviews; on the "
        f"{setup['eval_samples']} evaluated reviews, signed Sensitivity-n (n = "
        f"{', '.join(map(str, setup['n_values']))}; {setup['subsets']} subsets, the "
        "same for every model) of CP-LRP and gradient*input, CP-LRP's deletion area "
        "(MoRF, softmax probability, steps of 5%; lower is more faithful) and the "
        "share of its absolute relevance on each review's 10% most relevant tokens. "
        "`d ± se`: FBI minus the baseline of the same seed, paired over reviews. "
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with "
        f"other jobs, no GPU; wall time {wall}.",
        "",
        *table(result),
        "",
        *reading(result),
        "",
    ]
    rows = [
        f"| 11. FBI on a text transformer, lambda {lam} (Yoo et al. 2019; issue 22) "
        "| more meaningful maps, no accuracy cost | accuracy "
        f"{judged['mean_accuracy_difference']:+.3f} ({judged['accuracy']}); L_FBI "
        f"{'reduced' if judged['fbi_loss_reduced'] else 'not reduced in every seed'}"
        f"; CP-LRP Sensitivity-n: {judged['faithfulness']} | {judged['verdict']} |"
        for lam, judged in result["judgement"].items()
    ]
    return Section("\n".join(lines), rows)


if __name__ == "__main__":
    tf.config.threading.set_inter_op_parallelism_threads(1)
    main()
