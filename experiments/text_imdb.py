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
`experiments/reproduce_all.py` writes section 6 of docs/RESULTS.md from them.

    python experiments/text_imdb.py --output-dir runs/text            # ~13 min, 2 cores
    python experiments/text_imdb.py --output-dir runs/text_q --quick  # ~2 min
"""

from __future__ import annotations

import functools
import json
import os
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
        return functools.partial(method, eps=1e-4)
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


if __name__ == "__main__":
    tf.config.threading.set_inter_op_parallelism_threads(1)
    main()
