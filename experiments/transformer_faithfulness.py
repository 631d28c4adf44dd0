"""Experiment 10: CP-LRP against gradient*input on small transformers (issue 22).

Ali et al. (ICML 2022) report that LRP with conservative rules through attention
and LayerNorm (CP-LRP: the attention probabilities and LayerNorm's standard
deviation held constant) explains transformers more faithfully than
gradient*input. Two small transformers, one training seed:

(a) `text_transformer`: IMDB token ids -> Embedding (padding mask) + a learned
    position embedding -> two blocks of MultiHeadAttention + LayerNorm + ReLU
    feed-forward + LayerNorm -> masked global average pooling -> Dense(2);
(b) `vit`: a CIFAR-10 subset -> 4x4 Conv2D patch projection + a learned position
    embedding -> the same two blocks -> global average pooling -> Dense(10);

and on their test samples the signed Sensitivity-n of gradient*input,
integrated gradients, Occlusion-1 and CP-LRP (`kar.attributions.epsilon_lrp`,
eps = 1e-4), every sample's correlations kept, judged by the rule of
docs/VERDICT_RULES.md (experiment 10): per sample, the curve averaged over n,
CP-LRP minus gradient*input, its mean against 2 standard errors.

Outputs in --output-dir: `results.json`, `sensitivity_n_<model>.png`; trained
weights in `checkpoints/` (a rerun loads them, and skips a model whose
`sensitivity_<model>.json` is written). `report` writes section 10 of
docs/RESULTS.md from them (`reproduce_all.py`).

    python experiments/transformer_faithfulness.py --output-dir runs/transformers
    python experiments/transformer_faithfulness.py --output-dir runs/tq --quick

The rule judges training seed 0; `--seeds 1 --output-dir
outputs/transformer_faithfulness_seed1` (beside `outputs/transformer_faithfulness`)
adds a seed that the report shows beside the rule.
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
from _common import arrays, output_dir, parser, train, write_json  # noqa: E402
from _report import VERDICT_ORDER, Section, figure, load, wall_time  # noqa: E402

import keras_attreg as kar  # noqa: E402
from keras_attreg.plotting import plot_sensitivity_n  # noqa: E402
from keras_attreg.relevance import EpsilonRule, register_rule  # noqa: E402

L = keras.layers
EPS = 1e-4  # Ancona et al.'s DeepExplain default, as in experiments 4 and 6
DIM, HEADS = 64, 4
METHODS = {
    "gradient_x_input": "gradient*input",
    "integrated_gradients": "integrated gradients",
    "occlusion": "Occlusion-1",
    "epsilon_lrp": "CP-LRP",
}
MODELS = {"text_transformer": "text transformer (IMDB)", "vit": "ViT (CIFAR-10)"}
ACCURACY_BAR = {"text_transformer": 0.70, "vit": 0.35}  # the rule's "it learned"


@keras.saving.register_keras_serializable(package="keras_attreg_experiments")
class AddPosition(L.Layer):
    """A learned position embedding added to its input: x + w, one vector per
    position (w of the sample shape of x; the padding mask passes)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def build(self, shape):
        self.position = self.add_weight(
            shape=tuple(shape[1:]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="position",
        )

    def call(self, x):
        return x + self.position


def encoder(x, blocks: int = 2):
    """Post-LN blocks: x <- LN(x + MHA(x, x)), x <- LN(x + FFN(x)); pooled."""
    for i in range(blocks):
        h = L.MultiHeadAttention(HEADS, DIM // HEADS, name=f"attention{i}")(x, x)
        x = L.LayerNormalization(name=f"norm{i}a")(L.Add()([x, h]))
        h = L.Dense(2 * DIM, activation="relu", name=f"ffn{i}a")(x)
        x = L.LayerNormalization(name=f"norm{i}b")(
            L.Add()([x, L.Dense(DIM, name=f"ffn{i}b")(h)])
        )
    return L.GlobalAveragePooling1D()(x)


def text_transformer(vocabulary: int, length: int, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    ids = keras.Input((length,), dtype="int32")
    x = L.Embedding(vocabulary, DIM, mask_zero=True, name="embedding")(ids)
    x = encoder(AddPosition(name="position")(x))
    return keras.Model(ids, L.Dense(2, name="logits")(x), name="text_transformer")


def vit(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    image = keras.Input((32, 32, 3))
    x = L.Conv2D(DIM, 4, strides=4, name="patches")(image)
    x = encoder(AddPosition(name="position")(L.Reshape((64, DIM))(x)))
    return keras.Model(image, L.Dense(10, name="logits")(x), name="vit")


def text_data(args):
    """Train / test datasets and the evaluated reviews: the first test reviews
    with at least max(n) tokens, so every n of the grid is defined."""
    train_ds, vectorizer = kar.datasets.load_imdb(
        "train",
        data_dir=args.data_dir,
        vocabulary_size=args.vocabulary_size,
        sequence_length=args.sequence_length,
        limit=args.train_samples,
        adapt_limit=args.train_samples,
        shuffle=True,
        seed=0,
        batch_size=64,
    )
    test_ds, _ = kar.datasets.load_imdb(
        "test",
        data_dir=args.data_dir,
        vectorizer=vectorizer,
        limit=args.test_samples,
        batch_size=256,
    )
    x, y = arrays(test_ds)
    long = np.flatnonzero((x != 0).sum(axis=1) >= max(args.text_n))
    chosen = long[: args.eval_samples]
    model = text_transformer(args.vocabulary_size, args.sequence_length, args.seed)
    return model, train_ds, test_ds, x[chosen], y[chosen], args.text_n


def vit_data(args):
    """Train / test datasets (standardised pixels) and the first test images."""
    train_ds = kar.datasets.load_cifar10(
        "train",
        args.data_dir,
        limit=args.train_images,
        shuffle=True,
        seed=0,
        batch_size=64,
    )
    test_ds = kar.datasets.load_cifar10(
        "test", args.data_dir, limit=args.test_images, batch_size=256
    )
    x, y = arrays(test_ds)
    n_values = [2**k for k in range(10)]  # 1 ... 512 of the 1,024 pixels
    return (
        vit(args.seed),
        train_ds,
        test_ds,
        x[: args.eval_samples],
        y[: args.eval_samples],
        n_values,
    )


def method(name: str, quick: bool):
    """The attribution method `name` with this experiment's settings."""
    if name == "integrated_gradients":
        return functools.partial(
            kar.attributions.integrated_gradients, steps=8 if quick else 32
        )
    if name == "occlusion":
        return functools.partial(kar.attributions.occlusion, patch_size=1)
    if name == "epsilon_lrp":
        return functools.partial(kar.attributions.epsilon_lrp, epsilon=EPS)
    return kar.attributions.get(name)


def paired(first, second) -> dict:
    """The rule's paired comparison of two (samples, K) per-sample curves.

    A sample counts if both are defined (not NaN) at every n; d_i is the
    difference of its curves averaged over n. Returns the mean `d`, its
    standard error `se` (ddof 1), the counted and left-out samples, and the
    same mean and standard error per n (`d_n`, `se_n`).
    """
    first, second = np.asarray(first, float), np.asarray(second, float)
    kept = np.isfinite(first).all(axis=1) & np.isfinite(second).all(axis=1)
    diffs = first[kept] - second[kept]
    count = int(kept.sum())
    per_sample = diffs.mean(axis=1)
    return {
        "d": float(per_sample.mean()),
        "se": float(per_sample.std(ddof=1) / np.sqrt(count)),
        "samples": count,
        "left_out": int((~kept).sum()),
        "d_n": diffs.mean(axis=0).tolist(),
        "se_n": (diffs.std(axis=0, ddof=1) / np.sqrt(count)).tolist(),
    }


def trained(name: str, args, folder):
    """`(model, logs, test_ds, x, y, n_values)`: the model trained (or loaded
    from its checkpoint), its test set and the evaluated samples."""
    build = text_data if name == "text_transformer" else vit_data
    model, train_ds, test_ds, x, y, n_values = build(args)
    model, logs = train(
        model, name, folder, train_ds, test_ds, args.epochs[name], verbose=args.verbose
    )
    return model, logs, test_ds, x, y, n_values


def evaluate(name: str, args, folder) -> dict:
    """Trains (or loads) one model and scores the four methods on it."""
    cache = folder / f"sensitivity_{name}.json"
    if cache.exists():
        print(f"skipping finished run {cache}")
        return json.loads(cache.read_text())
    start = time.perf_counter()
    model, logs, test_ds, x, y, n_values = trained(name, args, folder)
    x_test, y_test = arrays(test_ds)
    accuracy = float(np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test))
    maps = {
        m: np.asarray(method(m, args.quick)(model, x, y))
        for m in ("gradient_x_input", "epsilon_lrp")
    }
    row = {
        "test_accuracy": accuracy,
        "test_samples": len(y_test),
        "train_seconds": logs["train_seconds"],
        "evaluated_samples": len(y),
        "n_values": n_values,
        "lrp_vs_gradient_x_input_max_relative_difference": float(
            np.abs(maps["epsilon_lrp"] - maps["gradient_x_input"]).max()
            / np.abs(maps["gradient_x_input"]).max()
        ),
        "methods": {},
    }
    curves = {}
    for m, label in METHODS.items():
        tick = time.perf_counter()
        result = kar.evaluation.sensitivity_n(
            model,
            (x, y),
            method(m, args.quick),
            n_values=n_values,
            num_subsets=args.subsets,
            seed=0,
            verbose=0,
            label=label,
        )
        curves[label] = result
        row["methods"][m] = {
            **result.to_dict(),
            "per_sample": [
                [None if np.isnan(v) else float(v) for v in sample]
                for sample in result.per_sample
            ],
            "seconds": time.perf_counter() - tick,
        }
        print(f"{name} {m}: {np.round(result.correlation, 3).tolist()}")
    plot_sensitivity_n(curves, folder / f"sensitivity_n_{name}.png")
    row["seconds"] = time.perf_counter() - start
    write_json(cache, row)
    return row


def perturbation(name: str, args, folder) -> dict:
    """Beside the rule (added after its verdict was seen): the deletion area of
    each method's ranking, most relevant features first (MoRF, low is
    faithful) and least relevant first (LeRF, high is faithful), softmax
    probability of the true class, steps of 5%: the kind of measure Ali et al.
    use. Per-sample areas kept; paired against gradient*input as the rule
    does."""
    cache = folder / f"perturbation_{name}.json"
    if cache.exists():
        print(f"skipping finished run {cache}")
        return json.loads(cache.read_text())
    start = time.perf_counter()
    model, _, _, x, y, _ = trained(name, args, folder)
    areas = {}
    for m in METHODS:
        maps = np.asarray(method(m, args.quick)(model, x, y))
        areas[m] = {
            order: kar.evaluation.deletion(model, (x, y), sign * maps).areas()
            for order, sign in (("morf", 1.0), ("lerf", -1.0))
        }
    row = {
        m: {
            order: {
                "area": float(values.mean()),
                "per_sample": values.tolist(),
                **{
                    key: paired(
                        values[:, None], areas["gradient_x_input"][order][:, None]
                    )[key]
                    for key in ("d", "se")
                },
            }
            for order, values in by_order.items()
        }
        for m, by_order in areas.items()
    }
    row["seconds"] = time.perf_counter() - start
    write_json(cache, row)
    return row


def judge(models: dict) -> dict:
    """The verdict of docs/VERDICT_RULES.md (experiment 10) from the rows of
    `evaluate`: per model CP-LRP against gradient*input, and the verdict."""
    labels, comparisons = {}, {}
    for name, row in models.items():
        per_sample = {m: v["per_sample"] for m, v in row["methods"].items()}
        comparisons[name] = {
            m: paired(
                np.array(per_sample[m], float),
                np.array(per_sample["gradient_x_input"], float),
            )
            for m in ("epsilon_lrp", "integrated_gradients", "occlusion")
        }
        c = comparisons[name]["epsilon_lrp"]
        if row["test_accuracy"] < ACCURACY_BAR[name]:
            labels[name] = "not judged"
        elif c["d"] > 2 * c["se"]:
            labels[name] = "more faithful"
        elif c["d"] < -2 * c["se"]:
            labels[name] = "less faithful"
        else:
            labels[name] = "no difference shown"
    values = [labels.get(name) for name in MODELS]
    more = values.count("more faithful")
    if more == len(MODELS):
        verdict = VERDICT_ORDER[2]
    elif more == 1 and "less faithful" not in values:
        verdict = VERDICT_ORDER[1]
    else:
        verdict = VERDICT_ORDER[0]
    return {"labels": labels, "comparisons": comparisons, "verdict": verdict}


def main() -> None:
    start = time.perf_counter()
    args = parse()
    folder = output_dir(args.output_dir)
    report = {"setup": vars(args), "models": {}}
    with register_rule(AddPosition, EpsilonRule(EPS)):  # x + w: w is a bias
        for name in args.models:
            report["models"][name] = evaluate(name, args, folder)
            report["models"][name]["perturbation"] = perturbation(name, args, folder)
            write_json(folder / "results.json", report)
    report["judgement"] = judge(report["models"])
    report["seconds"] = time.perf_counter() - start
    write_json(folder / "results.json", report)
    for line in table(report):
        print(line)


def parse():
    cli = parser(__doc__)
    cli.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    cli.add_argument("--eval-samples", type=int, default=None)
    return sizes(cli.parse_args())


def sizes(args):
    """The data, training and evaluation sizes of this experiment (CPU size,
    or tiny with `--quick`), set on `args`; experiment 11 shares them."""
    quick = args.quick
    args.seed = args.seeds[0]
    args.sequence_length = 64 if quick else 128
    args.vocabulary_size = 2000 if quick else 10000
    args.train_samples = 500 if quick else 8000
    args.test_samples = 300 if quick else 2000
    args.text_n = [1, 2, 4, 8] if quick else [1, 2, 4, 8, 16, 32, 64]
    args.train_images = 500 if quick else 10000
    args.test_images = 200 if quick else 1000
    args.epochs = {"text_transformer": 1 if quick else 3, "vit": 1 if quick else 10}
    args.subsets = 8 if quick else 32
    if args.eval_samples is None:
        args.eval_samples = 6 if quick else 200
    return args


def table(result: dict) -> list[str]:
    """The Markdown tables of the report: curves, paired differences, verdict."""
    judgement, lines = result["judgement"], []
    for name, row in result["models"].items():
        n_values = row["n_values"]
        comparisons = judgement["comparisons"][name]
        lines += [
            f"**{MODELS[name]}**: test accuracy {row['test_accuracy']:.3f} on "
            f"{row['test_samples']} test samples; {row['evaluated_samples']} "
            "evaluated samples. Mean signed-Pearson Sensitivity-n per n; `SN` = "
            "the curve averaged over n; `d ± se`: the paired difference against "
            "gradient*input of the per-sample `SN` (samples defined at every n).",
            "",
            "| method \\ n | " + " | ".join(map(str, n_values)) + " | SN | d ± se |",
            "| --- " * (len(n_values) + 3) + "|",
        ]
        for m, label in METHODS.items():
            curve = [
                np.nan if v is None else v for v in row["methods"][m]["correlation"]
            ]
            if m == "gradient_x_input":
                cell = "(reference)"
            else:
                c = comparisons[m]
                cell = f"{c['d']:+.4f} ± {c['se']:.4f} ({c['samples']} samples)"
            lines.append(
                f"| {label} | "
                + " | ".join(f"{v:.3f}" for v in curve)
                + f" | {np.nanmean(curve):.3f} | {cell} |"
            )
        c = comparisons["epsilon_lrp"]
        lines += [
            "",
            "CP-LRP minus gradient*input per n (d ± se): "
            + ", ".join(
                f"n = {n}: {d:+.4f} ± {s:.4f}"
                for n, d, s in zip(n_values, c["d_n"], c["se_n"], strict=True)
            )
            + f". Largest relative difference |CP-LRP - gradient*input| / "
            f"max|gradient*input| over the evaluated samples: "
            f"{row['lrp_vs_gradient_x_input_max_relative_difference']:.2f}. "
            f"Rule: d = {c['d']:+.4f}, 2 se = {2 * c['se']:.4f}, "
            f"{c['left_out']} samples left out: **{judgement['labels'][name]}**.",
            "",
        ]
    verdict = judgement["verdict"]
    lines.append(f"**Verdict (docs/VERDICT_RULES.md, experiment 10): {verdict}.**")
    return lines


def reading(result: dict) -> list[str]:
    """What the numbers say beside the verdict, and what they cannot say."""
    judgement, lines = result["judgement"], []
    plain = {
        "more faithful": "more faithful than gradient*input",
        "less faithful": "less faithful than gradient*input",
        "no difference shown": "not distinguishable from gradient*input",
        "not judged": "not judged (the model did not learn)",
    }

    def side(c: dict, sign: int, n_values: list) -> str:
        """The n where the per-n difference is beyond 2 se on `sign`'s side."""
        ns = [
            str(n)
            for n, d, se in zip(n_values, c["d_n"], c["se_n"], strict=True)
            if sign * d > 2 * se
        ]
        return ", ".join(ns) or "none"

    for name, row in result["models"].items():
        sn = {
            METHODS[m]: np.nanmean(
                [np.nan if v is None else v for v in row["methods"][m]["correlation"]]
            )
            for m in METHODS
        }
        ranking = sorted(sn, key=sn.get, reverse=True)
        c = judgement["comparisons"][name]["epsilon_lrp"]
        above, below = (side(c, sign, row["n_values"]) for sign in (1, -1))
        beyond = [
            METHODS[m]
            for m, c in judgement["comparisons"][name].items()
            if abs(c["d"]) > 2 * c["se"]
        ]
        lines.append(
            f"- {MODELS[name]}: methods by `SN`, highest first: "
            + ", ".join(f"{m} {sn[m]:.3f}" for m in ranking)
            + "; differing from gradient*input by more than 2 se: "
            + (", ".join(beyond) or "none")
            + f". CP-LRP: {judgement['labels'][name]}; per n, above gradient*input "
            f"by more than 2 se at n = {above}, below at n = {below}."
        )
    return lines + [
        "- Against us: CP-LRP is the package's default rule through attention and "
        "LayerNorm (docs/relevance.md; it equals the test's own tape of x * dS_c/dx "
        "with the probabilities and LayerNorm's std frozen, "
        "tests/test_relevance_attention.py). By Sensitivity-n it is "
        + "; ".join(
            f"{plain[label]} on the {MODELS[name]}"
            for name, label in judgement["labels"].items()
        )
        + ".",
        "- What the rule cannot say: one trained model per domain, so the standard "
        "errors are over samples, not over training seeds or architectures; "
        "Sensitivity-n (sums of attributions against the output change when random "
        "subsets are removed) is not the input-perturbation measure of Ali et al.; "
        "at small n the output change of a removal is close to its first-order "
        "term, which is gradient*input's own sum, so small n leans towards "
        "gradient*input, and CP-LRP leaves out by design the derivative through the "
        "attention probabilities and LayerNorm's std.",
    ]


def perturbation_table(result: dict) -> list[str]:
    """The deletion areas of `perturbation`, beside the rule, and a reading of
    CP-LRP against gradient*input by them (2 se, as the rule)."""
    models = {
        k: r["perturbation"] for k, r in result["models"].items() if "perturbation" in r
    }
    if not models:
        return []
    lines = [
        "Beside the rule (added after the verdict above was seen, no verdict): the "
        "deletion area of each method's ranking with the softmax probability of the "
        "true class, features removed (set to 0) in steps of 5%, most relevant "
        "first (MoRF: lower is more faithful) and least relevant first (LeRF: "
        "higher is more faithful), the kind of measure Ali et al. use; mean over "
        "the evaluated samples, and `d ± se` against gradient*input, paired over "
        "samples.",
        "",
        "| model | method | MoRF area | d ± se | LeRF area | d ± se |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, found in models.items():
        for m, label in METHODS.items():
            cells = []
            for order in ("morf", "lerf"):
                c = found[m][order]
                cells.append(f"{c['area']:.3f}")
                cells.append(
                    "(reference)"
                    if m == "gradient_x_input"
                    else f"{c['d']:+.4f} ± {c['se']:.4f}"
                )
            lines.append(f"| {MODELS[name]} | {label} | " + " | ".join(cells) + " |")
    readings = []
    for name, found in models.items():
        for order, better in (("MoRF", -1), ("LeRF", 1)):
            c = found["epsilon_lrp"][order.lower()]
            word = (
                "more faithful"
                if better * c["d"] > 2 * c["se"]
                else "less faithful"
                if better * c["d"] < -2 * c["se"]
                else "no difference shown"
            )
            readings.append(f"{MODELS[name]} {order}: {word}")
    return [
        *lines,
        "",
        "By these areas, CP-LRP against gradient*input (2 se): "
        + "; ".join(readings)
        + ".",
    ]


def seed_table(result: dict, outputs) -> list[str]:
    """CP-LRP against gradient*input in every training seed run (this
    result's, and any `transformer_faithfulness_seed<k>` folder beside it),
    beside the rule: the seed of the rule is the first one."""
    runs = [result] + [
        load(path)
        for path in sorted(outputs.glob("transformer_faithfulness_seed*/results.json"))
    ]
    if len(runs) == 1:
        return []
    lines = [
        "Other training seeds (beside the rule, run after its verdict was seen; "
        "same data, settings and subsets, another initialisation): CP-LRP minus "
        "gradient*input, paired over samples, with the rule's label for "
        "Sensitivity-n; deletion areas as above (MoRF: negative is more faithful; "
        "LeRF: positive).",
        "",
        "| training seed | model | test accuracy | Sensitivity-n d ± se | "
        "MoRF d ± se | LeRF d ± se |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        judgement = run["judgement"]
        for name, row in run["models"].items():
            c = judgement["comparisons"][name]["epsilon_lrp"]
            areas = row["perturbation"]["epsilon_lrp"]
            lines.append(
                f"| {run['setup']['seed']} | {MODELS[name]} | "
                f"{row['test_accuracy']:.3f} | {c['d']:+.4f} ± {c['se']:.4f} "
                f"({judgement['labels'][name]}) | "
                + " | ".join(
                    f"{areas[o]['d']:+.4f} ± {areas[o]['se']:.4f}"
                    for o in ("morf", "lerf")
                )
                + " |"
            )
    verdicts = ", ".join(
        f"seed {run['setup']['seed']} {run['judgement']['verdict']}" for run in runs
    )
    return [*lines, "", f"The rule applied to each seed: {verdicts}."]


def report(result, outputs, docs) -> Section:
    """Section 10 of docs/RESULTS.md (CP-LRP against gradient*input)."""
    setup, judgement = result["setup"], result["judgement"]
    wall = wall_time(
        "transformer_faithfulness", result, load(outputs / "timings.json") or {}
    )
    lines = [
        "## 10. CP-LRP against gradient*input on small transformers (Ali et al. "
        "2022; issue 22)",
        "",
        "Paper: Ali et al. (ICML 2022) report that LRP with their conservative "
        "rules (CP-LRP: attention probabilities and LayerNorm's standard "
        "deviation held constant in the backward pass) is more faithful than "
        "gradient*input on transformers, by input perturbation (the output change "
        "as the most or least relevant tokens are removed). We test the direction "
        "of that claim with Sensitivity-n (Ancona et al.), the measure of sections "
        "4 and 6, by the rule of docs/VERDICT_RULES.md (experiment 10), written "
        "before the run.",
        "",
        "Ours: `experiments/transformer_faithfulness.py`, one training seed "
        f"({setup['seed']}). Both models: width {DIM}, {HEADS} heads of size "
        f"{DIM // HEADS}, two post-LN blocks x <- LN(x + MHA(x, x)), "
        f"x <- LN(x + Dense({DIM})(ReLU(Dense({2 * DIM})(x)))), global average "
        "pooling, Dense logits, a learned position embedding added after the "
        "input projection; Adam 1e-3, batch 64. Text: IMDB from the local "
        f"TFRecords, the first {setup['train_samples']} training reviews (a "
        f"vocabulary of {setup['vocabulary_size']} tokens adapted on them), cut or "
        f"padded to {setup['sequence_length']} tokens, Embedding with the padding "
        f"mask (masked attention and pooling), {setup['epochs']['text_transformer']} "
        f"epochs; accuracy on the first {setup['test_samples']} test reviews; "
        "evaluated: the first test reviews with at least "
        f"{max(setup['text_n'])} tokens. ViT: 4x4 Conv2D patches of 32x32 "
        f"standardised images (64 patches), the first {setup['train_images']} "
        "CIFAR-10 training images (the JPEG TFRecord, original order; shuffled with a "
        "fixed seed each epoch), "
        f"{setup['epochs']['vit']} epochs; accuracy on the first "
        f"{setup['test_images']} test images; evaluated: the first of them. "
        f"Sensitivity-n, true class, {setup['subsets']} random subsets per "
        "(sample, n), the same subsets for every method, signed Pearson; a "
        "removed token's embedding (a removed pixel's three channels) set to 0, "
        "padding never drawn. Methods: gradient*input, integrated gradients "
        "(32 steps, zero baseline), Occlusion-1 (one token, one pixel), CP-LRP = "
        f"`epsilon_lrp` with eps = {EPS:g} (the position embedding crossed as a "
        "bias by the same epsilon rule). Machine: "
        f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other "
        f"jobs, no GPU; wall time {wall}.",
        "",
        *table(result),
        "",
    ]
    for name in MODELS:
        lines.append(
            figure(
                outputs,
                docs,
                f"transformer_faithfulness/sensitivity_n_{name}.png",
                f"transformer_sensitivity_n_{name}.png",
                f"Sensitivity-n, {MODELS[name]}: mean over the evaluated samples "
                "with one standard error.",
            )
        )
    lines += [
        *reading(result),
        "",
        *perturbation_table(result),
        "",
        *seed_table(result, outputs),
        "",
    ]
    cells = "; ".join(
        f"{MODELS[name]}: d = {c['epsilon_lrp']['d']:+.4f} ± "
        f"{c['epsilon_lrp']['se']:.4f} ({judgement['labels'][name]})"
        for name, c in judgement["comparisons"].items()
    )
    rows = [
        "| 10. CP-LRP more faithful than gradient*input on small transformers "
        "(Ali et al. 2022; issue 22) | more faithful (input perturbation) | "
        f"Sensitivity-n, CP-LRP minus gradient*input, paired over samples: {cells} "
        f"| {judgement['verdict']} |"
    ]
    return Section("\n".join(lines), rows)


if __name__ == "__main__":
    tf.config.threading.set_inter_op_parallelism_threads(1)
    main()
