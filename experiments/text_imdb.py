"""Experiment 6: text classification on IMDB (Ancona et al.'s text domain).

A Conv1D text CNN and an LSTM on IMDB token ids (CPU size), per seed:

(a) Sensitivity-n over tokens of the attribution methods (taken at the
    Embedding output, summed per token; removal sets a token's embedding to 0);
(b) the L1 gradient penalty (Kiritoshi et al.) on the text CNN: test accuracy,
    and the share of |gradient*input| that lands on the top 10% of a review's
    tokens, against the unpenalised CNN;
(c) a figure of a few test reviews with their token heatmaps for the baseline
    and the penalised CNN.

Outputs in --output-dir: `results.json`, `sensitivity_n_<model>.png`,
`token_heatmaps.png`; trained weights in `checkpoints/` (a rerun resumes).
`report` writes section 6 of docs/RESULTS.md from them (`reproduce_all.py`).

    python experiments/text_imdb.py --output-dir runs/text            # ~13 min, 2 cores
    python experiments/text_imdb.py --output-dir runs/text_q --quick  # ~2 min
"""

from __future__ import annotations

import functools
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import (  # noqa: E402
    arrays,
    mean_spread,
    output_dir,
    parser,
    train,
    write_json,
)
from _report import VERDICT_ORDER, Section, change, figure, load, pm, wall_time

import keras_attreg as kar  # noqa: E402
from keras_attreg.plotting import plot_sensitivity_n, plot_token_heatmaps  # noqa: E402

METHODS = (
    "saliency",
    "gradient_x_input",
    "integrated_gradients",
    "smoothgrad",
    "occlusion",
    "epsilon_lrp",
    "deeplift_rescale",
)


def text_cnn(vocabulary: int, length: int, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((length,), dtype="int32")
    h = keras.layers.Embedding(vocabulary, 32)(inputs)
    h = keras.layers.Conv1D(64, 5, activation="relu")(h)
    h = keras.layers.GlobalMaxPooling1D()(h)
    return keras.Model(inputs, keras.layers.Dense(2)(h), name="text_cnn")


def text_lstm(vocabulary: int, length: int, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((length,), dtype="int32")
    h = keras.layers.Embedding(vocabulary, 32, mask_zero=True)(inputs)
    h = keras.layers.LSTM(32)(h)
    return keras.Model(inputs, keras.layers.Dense(2)(h), name="text_lstm")


def method_options(name: str, quick: bool):
    method = kar.attributions.get(name)
    if name == "integrated_gradients":
        return functools.partial(method, steps=8 if quick else 32)
    if name == "smoothgrad":
        return functools.partial(method, samples=4 if quick else 16)
    if name == "epsilon_lrp":  # Ancona et al.'s DeepExplain default, as in exp. 4
        return functools.partial(method, epsilon=1e-4)
    return method


def top_share(maps: np.ndarray, ids: np.ndarray, fraction: float = 0.1) -> float:
    """Mean over reviews of the share of sum_t |R_t| on the top 10% tokens."""
    shares = []
    for values, row in zip(np.abs(maps), ids, strict=True):
        values = values[row != 0]
        if values.size == 0 or values.sum() == 0:
            continue
        top = max(1, int(round(fraction * values.size)))
        shares.append(np.sort(values)[::-1][:top].sum() / values.sum())
    return float(np.mean(shares))


def unsupported_layer(error: ValueError) -> str:
    """The reason of a method's documented refusal of a layer, else re-raises.

    The relevance methods (epsilon-LRP, DeepLIFT) raise a ValueError that says
    "has no rule for" when the model holds a layer they cannot pass (DeepLIFT
    on an LSTM); any other error is a bug and propagates.
    """
    last = str(error).strip().splitlines()[-1].strip()  # tf.function adds a trace
    if "has no rule for" not in last:
        raise error
    return last.removeprefix("ValueError: ")


def evaluate_methods(model, x, y, n_values, args, folder, tag) -> dict:
    """Sensitivity-n over tokens of every method available on `model`."""
    cache = folder / f"sensitivity_{tag}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    results = {}
    for name in METHODS:
        method = method_options(name, args.quick)
        try:
            result = kar.evaluation.sensitivity_n(
                model,
                (x, y),
                method,
                n_values=n_values,
                num_subsets=args.subsets,
                verbose=0,
            )
        except ValueError as error:
            reason = unsupported_layer(error)
            results[name] = {"error": reason}
            print(f"{tag} {name}: not available ({reason})")
            continue
        results[name] = result.to_dict()
        print(f"{tag} {name}: {np.round(result.correlation, 3).tolist()}")
    write_json(cache, results)
    return results


def main() -> None:
    start = time.perf_counter()
    args = parse()
    folder = output_dir(args.output_dir)
    length, vocabulary = args.sequence_length, args.vocabulary_size
    train_ds, vectorizer = kar.datasets.load_imdb(
        "train",
        data_dir=args.data_dir,
        vocabulary_size=vocabulary,
        sequence_length=length,
        limit=args.train_reviews,
        adapt_limit=args.train_reviews,
        shuffle=True,
        seed=0,
        batch_size=64,
    )
    test_ds, _ = kar.datasets.load_imdb(
        "test",
        data_dir=args.data_dir,
        vectorizer=vectorizer,
        limit=args.test_reviews,
        batch_size=256,
    )
    x_test, y_test = arrays(test_ds)
    x_eval, y_eval = x_test[: args.eval_reviews], y_test[: args.eval_reviews]
    n_values = [n for n in (1, 2, 4, 8, 16, 32, 64) if n < length]
    words = np.array(vectorizer.get_vocabulary())
    report = {"setup": vars(args), "runs": {}}
    heatmaps = {}
    for seed in args.seeds:
        plan = [("text_cnn", text_cnn, None)]
        if seed in args.lstm_seeds:
            plan.append(("text_lstm", text_lstm, None))
        plan += [
            (f"text_cnn_l1_{alpha:g}", text_cnn, kar.L1GradientPenalty(alpha))
            for alpha in args.alphas
        ]
        runs = {}
        for name, build, regularizer in plan:
            model, logs = train(
                build(vocabulary, length, seed),
                f"{name}_seed{seed}",
                folder,
                train_ds,
                test_ds,
                args.epochs,
                regularizer=regularizer,
                verbose=args.verbose,
            )
            predictions = np.argmax(model.predict(x_test, verbose=0), -1)
            maps = np.asarray(kar.attributions.gradient_x_input(model, x_eval, y_eval))
            gradient = np.asarray(kar.attributions.saliency(model, x_eval, y_eval))
            runs[name] = {
                "test_accuracy": float(np.mean(predictions == y_test)),
                "train_seconds": logs["train_seconds"],
                "top10_share_gradient_x_input": top_share(maps, x_eval),
                "mean_l1_embedding_gradient": float(gradient.sum(axis=1).mean()),
            }
            if regularizer is None:
                lrp = method_options("epsilon_lrp", args.quick)(model, x_eval, y_eval)
                lrp = np.asarray(lrp)
                runs[name]["lrp_vs_gradient_x_input_max_relative_difference"] = float(
                    np.abs(lrp - maps).max() / np.abs(maps).max()
                )
                runs[name]["sensitivity_n"] = evaluate_methods(
                    model, x_eval, y_eval, n_values, args, folder, f"{name}_seed{seed}"
                )
            if build is text_cnn and seed == args.seeds[0]:
                label = "baseline" if regularizer is None else name
                heatmaps[label] = maps
        report["runs"][str(seed)] = runs
        write_json(folder / "results.json", summarise(report, args))
    for name in ("text_cnn", "text_lstm"):
        curves = {}
        for method in METHODS:
            seeds = [
                report["runs"][str(s)][name]["sensitivity_n"][method]
                for s in args.seeds
                if name in report["runs"][str(s)]
            ]
            if seeds and "error" not in seeds[0]:
                curves[method] = kar.evaluation.SensitivityNResult(
                    n_values=np.array(seeds[0]["n_values"]),
                    correlation=np.nanmean(
                        [
                            [np.nan if v is None else v for v in r["correlation"]]
                            for r in seeds
                        ],
                        axis=0,
                    ),
                    per_sample=np.zeros((0, len(seeds[0]["n_values"]))),
                    undefined=np.zeros(len(seeds[0]["n_values"]), int),
                    absolute=False,
                )
        if curves:
            plot_sensitivity_n(curves, folder / f"sensitivity_n_{name}.png")
    shown = range(min(2, len(x_eval)))
    plot_token_heatmaps(
        [[str(w) for w in words[x_eval[i][x_eval[i] != 0]]] for i in shown],
        {label: maps[list(shown)] for label, maps in heatmaps.items()},
        folder / "token_heatmaps.png",
        max_tokens=60,
    )
    report["seconds"] = time.perf_counter() - start
    write_json(folder / "results.json", summarise(report, args))


def summarise(report: dict, args) -> dict:
    """Adds means and spreads over the seeds of every scalar of every run."""
    summary = {}
    names = {name for runs in report["runs"].values() for name in runs}
    for name in sorted(names):
        present = [runs[name] for runs in report["runs"].values() if name in runs]
        summary[name] = {
            key: mean_spread([run[key] for run in present])
            for key, value in present[0].items()
            if isinstance(value, float)
        }
    return {**report, "summary": summary}


def parse():
    cli = parser(__doc__)
    cli.add_argument("--epochs", type=int, default=None)
    cli.add_argument("--alphas", type=float, nargs="+", default=None)
    cli.add_argument("--lstm-seeds", type=int, nargs="*", default=None)
    args = cli.parse_args()
    quick = args.quick
    defaults = {
        "epochs": 2 if quick else 3,
        "alphas": [0.01] if quick else [0.0003, 0.001, 0.003, 0.03],
        "lstm_seeds": args.seeds,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.sequence_length = 100 if quick else 200
    args.vocabulary_size = 5000 if quick else 10000
    args.train_reviews = 1000 if quick else 8000
    args.test_reviews = 500 if quick else 2000
    args.eval_reviews = 16 if quick else 48
    args.subsets = 10 if quick else 32
    if quick:
        args.seeds = args.seeds[:1]
    return args


TEXT_LABELS = {
    "saliency": "saliency",
    "gradient_x_input": "gradient*input",
    "integrated_gradients": "integrated gradients",
    "smoothgrad": "SmoothGrad",
    "occlusion": "Occlusion-1",
    "epsilon_lrp": "epsilon-LRP",
    "deeplift_rescale": "DeepLIFT-Rescale",
}
TEXT_LOCAL = ("saliency", "smoothgrad")
TEXT_MODELS = {"text_cnn": "text CNN", "text_lstm": "LSTM"}


def token_curves(result: dict, model: str) -> tuple[list, dict, dict]:
    """`(n_values, curves, reasons)` of one text model: per method, its
    Sensitivity-n curve in every seed (an array seeds x n, NaN where
    undefined), or the reason the method does not apply to the model."""
    curves, reasons, n_values = {}, {}, []
    for runs in result["runs"].values():
        for method, row in runs.get(model, {}).get("sensitivity_n", {}).items():
            if "error" in row:
                reasons[method] = row["error"]
                continue
            n_values = row["n_values"]
            curve = [np.nan if v is None else v for v in row["correlation"]]
            curves.setdefault(method, []).append(curve)
    return n_values, {m: np.array(c, dtype=float) for m, c in curves.items()}, reasons


def seed_stat(values: np.ndarray) -> dict:
    """`mean_spread` of per-seed values (sample std, 0 for one seed)."""
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "std": std}


def by_count(flags: list[bool]) -> str:
    """Reproduced on all models, partly on some, not reproduced on none."""
    return VERDICT_ORDER[2 if all(flags) else 1 if any(flags) else 0]


def text_sensitivity(result, outputs, docs) -> tuple[list[str], dict]:
    """Part (a) of section 6: a Sensitivity-n table per model, and the
    quantities of rules T1 to T5 (docs/VERDICT_RULES.md)."""
    lines, found = [], {}
    for model, title in TEXT_MODELS.items():
        n_values, curves, reasons = token_curves(result, model)
        mean = {m: np.nanmean(c, axis=0) for m, c in curves.items()}
        std = {
            m: np.nanstd(c, axis=0, ddof=1) if len(c) > 1 else np.zeros(len(c[0]))
            for m, c in curves.items()
        }
        sn = {m: seed_stat(np.nanmean(c, axis=1)) for m, c in curves.items()}
        summary = result["summary"][model]
        diff = summary["lrp_vs_gradient_x_input_max_relative_difference"]["mean"]
        seeds = len(next(iter(curves.values())))
        lines += [
            f"**{title}** ({seeds} seed{'s' * (seeds > 1)}, test accuracy "
            f"{pm(summary['test_accuracy'])}): signed Pearson correlation, mean ± "
            "std over seeds; `SN` = the curve averaged over n.",
            "",
            "| method \\ n | " + " | ".join(map(str, n_values)) + " | SN |",
            "| --- " * (len(n_values) + 2) + "|",
        ]
        for method, label in TEXT_LABELS.items():
            if method in reasons:
                cells = ["n/a"] * (len(n_values) + 1)
            else:
                cells = [
                    f"{m:.3f} ± {d:.3f}"
                    for m, d in zip(mean[method], std[method], strict=True)
                ] + [pm(sn[method])]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
        for method, reason in reasons.items():
            lines += [
                f"n/a: {TEXT_LABELS[method]} does not apply to the {title}: {reason}",
                "",
            ]
        lines += [
            f"Largest relative difference |epsilon-LRP - gradient*input| / "
            f"max|gradient*input| over the evaluated reviews: {diff:.1e} (mean "
            "over seeds).",
            "",
            figure(
                outputs,
                docs,
                f"text_imdb/sensitivity_n_{model}.png",
                f"text_sensitivity_n_{model.removeprefix('text_')}.png",
                f"Sensitivity-n over tokens, {title}, mean over seeds.",
            ),
        ]
        found[model] = {"mean": mean, "std": std, "sn": sn, "diff": diff}
    return lines, found


def text_verdicts(found: dict) -> dict:
    """The verdicts T1 to T5 of docs/VERDICT_RULES.md and their evidence."""
    leader = {
        k: max(f["mean"], key=lambda m: f["mean"][m][1]) for k, f in found.items()
    }
    distance = {
        k: {
            m: float(np.mean(np.abs(f["mean"][m] - f["mean"]["occlusion"])))
            for m in ("gradient_x_input", "integrated_gradients")
        }
        for k, f in found.items()
    }
    cnn, lstm = found["text_cnn"], found["text_lstm"]
    ratio = lstm["diff"] / max(cnn["diff"], 1e-12)
    apart = np.abs(lstm["mean"]["epsilon_lrp"] - lstm["mean"]["gradient_x_input"]) > (
        np.maximum(lstm["std"]["epsilon_lrp"], lstm["std"]["gradient_x_input"])
    )
    ig_dl = float(
        np.max(
            np.abs(
                cnn["mean"]["integrated_gradients"] - cnn["mean"]["deeplift_rescale"]
            )
        )
    )
    clearly, higher = {}, {}
    for k, f in found.items():
        pairs = [
            (f["sn"][g], f["sn"][m])
            for g in f["sn"]
            if g not in TEXT_LOCAL
            for m in TEXT_LOCAL
        ]
        clearly[k] = all(change(g, m)[1] == "clearly up" for g, m in pairs)
        higher[k] = all(g["mean"] > m["mean"] for g, m in pairs)
    t5 = by_count(list(clearly.values()))
    if t5 == "not reproduced" and all(higher.values()):
        t5 = "partly"
    return {
        "leader": leader,
        "distance": distance,
        "ratio": ratio,
        "apart": apart,
        "ig_dl": ig_dl,
        "clearly": clearly,
        "higher": higher,
        "T1": by_count([v == "occlusion" for v in leader.values()]),
        "T2": by_count(
            [
                d["gradient_x_input"] < d["integrated_gradients"]
                for d in distance.values()
            ]
        ),
        "T3": "reproduced"
        if ratio >= 10 and apart.any()
        else "partly"
        if ratio >= 10
        else "not reproduced",
        "T4": "reproduced" if ig_dl <= 0.05 else "not reproduced",
        "T5": t5,
    }


def text_penalty(result) -> tuple[list[str], str, str]:
    """Part (b) of section 6: the L1 penalty tables, rule T6, a summary cell."""
    summary, setup = result["summary"], result["setup"]
    names = {"0": "text_cnn"}
    names.update({f"{a:g}": f"text_cnn_l1_{a:g}" for a in setup["alphas"]})
    base = summary["text_cnn"]
    columns = (
        ("test_accuracy", 4),
        ("top10_share_gradient_x_input", 3),
        ("mean_l1_embedding_gradient", 1),
    )
    lines = [
        "Every run (alpha x seed):",
        "",
        "| alpha | seed | test accuracy | top-10% share | L1 norm of dS_c/de | "
        "train time |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for alpha, name in names.items():
        for seed, runs in result["runs"].items():
            if name in runs:
                run = runs[name]
                lines.append(
                    f"| {alpha} | {seed} | "
                    + " | ".join(f"{run[key]:.{d}f}" for key, d in columns)
                    + f" | {run['train_seconds'] / 60:.1f} min |"
                )
    lines += [
        "",
        "Per alpha, mean ± std over seeds, with the change against alpha = 0 and "
        "the rule's label (clearly up / down: beyond the larger seed std):",
        "",
        "| alpha | test accuracy | top-10% share | L1 norm of dS_c/de |",
        "| --- | --- | --- | --- |",
    ]
    labels = {}
    for alpha, name in names.items():
        cells = []
        for key, digits in columns:
            cell = pm(summary[name][key], digits)
            if alpha != "0":
                d, label = change(summary[name][key], base[key])
                labels[(alpha, key)] = (d, label)
                cell += f" ({d:+.{digits}f}, {label})"
            cells.append(cell)
        lines.append(f"| {alpha} | " + " | ".join(cells) + " |")
    alphas = list(names)[1:]
    keeps = [a for a in alphas if labels[(a, "test_accuracy")][1] != "clearly down"]
    up = [
        a
        for a in alphas
        if labels[(a, "top10_share_gradient_x_input")][1] == "clearly up"
    ]
    higher = [a for a in keeps if labels[(a, "top10_share_gradient_x_input")][0] > 0]
    both = [a for a in keeps if a in up]
    verdict = VERDICT_ORDER[2 if both else 1 if up or higher else 0]
    lines += [
        "",
        "- T6, the penalty concentrates the attribution: alpha keeping accuracy "
        f"(not clearly down): {', '.join(keeps) or 'none'}; top-10% share clearly "
        f"up: {', '.join(up) or 'none'}; both: {', '.join(both) or 'none'}. "
        f"**T6: {verdict}.**",
    ]
    best = max(
        both or up or alphas,
        key=lambda a: labels[(a, "top10_share_gradient_x_input")][0],
    )
    cell = (
        f"top-10% share {base['top10_share_gradient_x_input']['mean']:.3f} -> "
        f"{summary[names[best]]['top10_share_gradient_x_input']['mean']:.3f} at "
        f"alpha {best}, accuracy {base['test_accuracy']['mean']:.3f} -> "
        f"{summary[names[best]]['test_accuracy']['mean']:.3f}"
    )
    return lines, verdict, cell


def report(result, outputs, docs) -> Section:
    """Section 6 of docs/RESULTS.md (text, IMDB)."""
    setup = result["setup"]
    sensitivity, found = text_sensitivity(result, outputs, docs)
    v = text_verdicts(found)
    penalty, t6, penalty_cell = text_penalty(result)
    n_values = token_curves(result, "text_cnn")[0]
    seconds = sum(
        run["train_seconds"]
        for runs in result["runs"].values()
        for run in runs.values()
    )
    wall = wall_time("text_imdb", result, load(outputs / "timings.json") or {})

    def named(values: dict) -> str:
        """`model value, ...` with the models' and methods' names, yes / no."""
        words = {**TEXT_LABELS, True: "yes", False: "no"}
        return ", ".join(f"{TEXT_MODELS[k]} {words[x]}" for k, x in values.items())

    lines = [
        "## 6. Text: IMDB, Sensitivity-n over tokens and the L1 penalty (Ancona et "
        "al. 2018; Kiritoshi et al. 2019)",
        "",
        "Paper: Ancona et al. evaluate the attribution methods on text as well as "
        "images, with the IMDB reviews of Maas et al. (2011); their text model "
        "and text numbers are not in the stored notes "
        "(`../shared/papers/002_experiments.md`), so no paper number is quoted: "
        "we test their general findings on two text models (rules T1 to T5 of "
        "docs/VERDICT_RULES.md, written before this run). Kiritoshi et al. apply "
        "the L1 penalty to images only; on text it is new (T6).",
        "",
        f"Ours: `experiments/text_imdb.py`, IMDB from the local TFRecords: the first "
        f"{setup['train_reviews']} training reviews (a vocabulary of "
        f"{setup['vocabulary_size']} tokens adapted on them), cut or padded to "
        f"{setup['sequence_length']} tokens; test accuracy on the first "
        f"{setup['test_reviews']} test reviews. Adam 1e-3, batch 64, "
        f"{setup['epochs']} epochs, seeds {', '.join(map(str, setup['seeds']))} "
        f"(LSTM: {', '.join(map(str, setup['lstm_seeds'])) or 'none'}); per seed "
        "the same initial weights and data order for every alpha. Text CNN: "
        f"Embedding({setup['vocabulary_size']}, 32) -> Conv1D(64, 5, ReLU) -> "
        "global max pooling -> Dense(2); LSTM: Embedding("
        f"{setup['vocabulary_size']}, 32, mask_zero) -> LSTM(32) -> Dense(2). "
        f"Sensitivity-n over tokens on the first {setup['eval_reviews']} test "
        f"reviews, true class, n in {{{', '.join(map(str, n_values))}}}, "
        f"{setup['subsets']} random subsets per (review, n), a removed token's "
        "embedding set to 0, padding never drawn. Every method is taken at the "
        "Embedding output and summed per token: saliency (sum of |dS_c/de| over "
        "the embedding axis), gradient*input, integrated gradients (32 steps) "
        "and DeepLIFT-Rescale with the zero-embedding baseline, SmoothGrad of "
        "saliency (16 samples, noise 0.15), Occlusion-1 (one token set to the "
        "zero embedding), epsilon-LRP with eps = 1e-4 (Ancona et al.'s "
        "DeepExplain default, as in section 4; through the LSTM by the rule of "
        "Arras et al. 2017, docs/relevance.md). Machine: "
        f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other "
        f"jobs, no GPU; wall time {wall}, of which training {seconds / 60:.1f} "
        "min.",
        "",
        "### (a) Sensitivity-n over tokens",
        "",
        *sensitivity,
        "Verdicts (rules written before the run, docs/VERDICT_RULES.md):",
        "",
        f"- T1, Occlusion-1 leads at small n: highest mean correlation at n = "
        f"{n_values[1]}: {named(v['leader'])}. **T1: {v['T1']}.**",
        "- T2, gradient*input closer to Occlusion-1 than integrated gradients: "
        "mean over n of |curve - Occlusion-1 curve|: "
        + "; ".join(
            f"{TEXT_MODELS[k]} "
            + ", ".join(f"{TEXT_LABELS[m]} {x:.3f}" for m, x in d.items())
            for k, d in v["distance"].items()
        )
        + f". **T2: {v['T2']}.** Integrated gradients' SN against gradient*input's: "
        + ", ".join(
            f"{TEXT_MODELS[k]} "
            + change(f["sn"]["integrated_gradients"], f["sn"]["gradient_x_input"])[1]
            for k, f in found.items()
        )
        + ".",
        f"- T3, epsilon-LRP = gradient*input on the ReLU text CNN, not on the LSTM: "
        f"largest relative difference {found['text_cnn']['diff']:.1e} (text CNN) "
        f"and {found['text_lstm']['diff']:.1e} (LSTM), {v['ratio']:.0f}x; the LSTM "
        "mean curves differ by more than a seed std at n = "
        f"{[n for n, a in zip(n_values, v['apart'], strict=True) if a]}. "
        f"**T3: {v['T3']}.**",
        f"- T4, integrated gradients and DeepLIFT-Rescale very highly correlated: "
        f"largest gap of their mean curves on the text CNN {v['ig_dl']:.3f}. "
        f"**T4: {v['T4']}.**",
        "- T5, global above local (every global method's SN clearly above "
        "saliency's and SmoothGrad's): "
        + named(v["clearly"])
        + "; every global mean above every local mean: "
        + named(v["higher"])
        + f". **T5: {v['T5']}.**",
        "",
        "### (b) The L1 gradient penalty on the text CNN",
        "",
        "`L1GradientPenalty(alpha)`: the penalty is the L1 norm of dS_c/de over "
        "(tokens, embedding dimensions). Top-10% share: the share of "
        "sum_t |gradient*input_t| on the 10% highest tokens of a review, mean over "
        f"the {setup['eval_reviews']} evaluated reviews; L1 norm: the mean over "
        "them of sum_t,d |dS_c/de_t,d|.",
        "",
        *penalty,
        "",
        "### (c) Token heatmaps",
        "",
        figure(
            outputs,
            docs,
            "text_imdb/token_heatmaps.png",
            "text_token_heatmaps.png",
            "Token heatmaps: gradient times input for the true class (red for, "
            "blue against, each panel scaled to its own maximum) of two test "
            "reviews, baseline and penalised text CNNs, first seed.",
        ),
    ]
    rows = [
        "| 6a. Text (IMDB): Occlusion-1 leads at small n; grad*input closer to it "
        "than IG (Ancona et al.) | both (text numbers not available) | leader at "
        f"n = {n_values[1]}: {named(v['leader'])} | T1 {v['T1']}; T2 {v['T2']} |",
        "| 6b. Text: eps-LRP = grad*input on the ReLU text CNN, not on the LSTM "
        "(Arras rule) | equal on ReLU | relative difference "
        f"{found['text_cnn']['diff']:.1e} CNN vs {found['text_lstm']['diff']:.1e} "
        f"LSTM | {v['T3']} |",
        "| 6c. Text: IG and DeepLIFT very similar; global methods above local ones "
        f"| both | largest IG-DeepLIFT gap {v['ig_dl']:.3f} (CNN); global clearly "
        f"above local: {named(v['clearly'])}"
        f" | T4 {v['T4']}; T5 {v['T5']} |",
        "| 6d. L1 penalty concentrates token attribution, text CNN (new) | (not "
        f"measured: images only) | {penalty_cell} | {t6} |",
    ]
    return Section("\n".join(lines), rows)


if __name__ == "__main__":
    tf.config.threading.set_inter_op_parallelism_threads(1)
    main()
