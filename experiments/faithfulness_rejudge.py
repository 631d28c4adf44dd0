"""Issue 21: the regularisers re-judged by faithfulness metrics they do not optimise.

Loads the saved models of three experiments and scores their maps by the
deletion and insertion areas (Petsiuk et al. 2018) and the ROAD areas with
noisy linear imputation (Rong et al. 2022), beside the Sensitivity-n the
experiment reports (rules: docs/VERDICT_RULES.md, issue 21):

- `l1`: the L1 alpha sweep on CIFAR-10 (`outputs/l1_alpha_sweep`), the
  vanilla gradient |dS_c/dx| and gradient*input, on a fixed random 100 of the
  test images;
- `fbi`: the FBI lambda sweep on MNIST (`outputs/fbi_lambda_sweep`),
  epsilon-LRP and gradient*input, on the last 100 test digits;
- `decoy`: Decoy MNIST (`outputs/decoy_mnist`), the vanilla gradient and
  gradient*input, on the first 200 decoy test digits.

Every model of an experiment is scored on the same inputs; a model's value
is the mean over them. Per model a JSON under
`<output-dir>/models/`, so a restarted run skips what is done; a missing
experiment (its outputs not there) is skipped.

    python experiments/faithfulness_rejudge.py --output-dir outputs/faithfulness_rejudge
"""

from __future__ import annotations

import json
import pathlib
import re
import time

import numpy as np
from _common import arrays, cached, output_dir, parser, quick, train, write_json
from _report import Section, interval, paired
from decoy_mnist import build as decoy_model
from decoy_mnist import load as decoy_data
from fbi_mnist import alexnet_like
from l1_penalty_cifar import vgg

import keras_attreg as kar
from keras_attreg.evaluation import deletion, insertion, road

METHODS = {
    "l1": ("saliency", "gradient_x_input"),
    "fbi": ("epsilon_lrp", "gradient_x_input"),
    "decoy": ("saliency", "gradient_x_input"),
}
FRACTIONS = tuple(np.round(np.arange(0.1, 1.0, 0.1), 2))


def scores(model, x, y, method: str, seed: int) -> dict:
    """The four areas of one model and method (means over the inputs)."""
    maps = np.asarray(kar.attributions.get(method)(model, x, y))
    data = (x, y)
    return {
        "deletion_auc": deletion(model, data, maps, step=0.05).area(),
        "insertion_auc": insertion(model, data, maps, step=0.05).area(),
        "road_morf_auc": road(
            model, data, maps, fractions=FRACTIONS, order="morf", seed=seed
        ).area(),
        "road_lerf_auc": road(
            model, data, maps, fractions=FRACTIONS, order="lerf", seed=seed
        ).area(),
    }


def score_model(model, x, y, experiment: str, seed: int, extra: dict) -> dict:
    logits = model.predict(x, batch_size=500, verbose=0)
    return {
        **extra,
        "seed": seed,
        "accuracy_on_scored_inputs": float(np.mean(np.argmax(logits, -1) == y)),
        "methods": {m: scores(model, x, y, m, seed) for m in METHODS[experiment]},
    }


def l1_models(outputs: pathlib.Path, args):
    folder = outputs / "l1_alpha_sweep"
    sweep = json.loads((folder / "results.json").read_text())
    x, y = arrays(kar.datasets.load_cifar10("test", args.data_dir, batch_size=1000))
    order = np.random.default_rng(0).permutation(len(x))[: args.samples]
    x, y = x[order], y[order]
    for run in sweep["runs"]:
        alpha, seed = run["alpha"], run["seed"]
        name = f"alpha{alpha:g}_seed{seed}"

        def load(alpha=alpha, name=name):
            regularizer = kar.L1GradientPenalty(alpha) if alpha else None
            model, _ = train(
                vgg(sweep["settings"]["arch"]), name, folder, None, None, 1, regularizer
            )
            return model

        extra = {"setting": f"{alpha:g}", "sensitivity_n": run["sensitivity_n_mean"]}
        yield f"l1_{name}", load, x, y, seed, extra


def fbi_models(outputs: pathlib.Path, args):
    folder = outputs / "fbi_lambda_sweep"
    sweep = json.loads((folder / "results.json").read_text())
    x, y = arrays(
        kar.datasets.load_mnist("test", args.data_dir, batch_size=1000, source="local")
    )
    x, y = x[-args.samples :], y[-args.samples :]
    for run in sweep["runs"]:
        lam, seed = run["lam"], run["seed"]
        name = f"lam{lam:g}_seed{seed}"

        def load(lam=lam, name=name):
            settings = sweep["settings"]
            regularizer = kar.FBILoss(lam=lam, epsilon=settings["eps"]) if lam else None
            shape = (28, 28, 1)
            model, _ = train(
                alexnet_like(shape), name, folder, None, None, 1, regularizer
            )
            return model

        sn = {m: v["mean_over_n"] for m, v in run["sensitivity_n"].items()}
        yield (
            f"fbi_{name}",
            load,
            x,
            y,
            seed,
            {"setting": f"{lam:g}", "sensitivity_n": sn},
        )


def decoy_models(outputs: pathlib.Path, args):
    folder = outputs / "decoy_mnist"
    x, y, _ = decoy_data(args.data_dir)["test"]
    x, y = x[: 2 * args.samples], y[: 2 * args.samples]
    pattern = re.compile(r"main_(mlp|cnn)_(\w+)_([^_]+)_seed(\d+)\.weights\.h5")
    for path in sorted((folder / "models").glob("main_*.weights.h5")):
        network, penalty, _, seed = pattern.fullmatch(path.name).groups()
        if penalty == "clean_reference":
            continue

        def load(network=network, seed=int(seed), path=path):
            model = decoy_model(network, seed)
            model.load_weights(path)
            return model

        key = path.name.removesuffix(".weights.h5")
        extra = {"setting": penalty, "model": network}
        yield f"decoy_{key}", load, x, y, int(seed), extra


SOURCES = {"l1": l1_models, "fbi": fbi_models, "decoy": decoy_models}
NEEDS = {"l1": "l1_alpha_sweep", "fbi": "fbi_lambda_sweep", "decoy": "decoy_mnist"}


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--outputs", default="outputs", help="the experiments' outputs")
    cli.add_argument("--samples", type=int, default=100)
    cli.add_argument("--experiments", nargs="+", default=list(SOURCES))
    args = quick(cli.parse_args(), samples=8)
    folder = output_dir(args.output_dir)
    outputs = pathlib.Path(args.outputs)
    start = time.perf_counter()
    results = {}
    for experiment in args.experiments:
        if not (outputs / NEEDS[experiment] / "results.json").exists():
            print(f"skipping {experiment}: no {NEEDS[experiment]}/results.json")
            continue
        results[experiment] = {
            key: cached(
                folder / "models" / f"{key}.json",
                lambda load=load, x=x, y=y, seed=seed, extra=extra, e=experiment: (
                    score_model(load(), x, y, e, seed, extra)
                ),
            )
            for key, load, x, y, seed, extra in SOURCES[experiment](outputs, args)
        }
    write_json(
        folder / "results.json",
        {
            "experiment": "faithfulness_rejudge",
            "settings": vars(args),
            "methods": METHODS,
            "road_fractions": list(FRACTIONS),
            "results": results,
            "seconds": time.perf_counter() - start,
        },
    )


FAITHFUL_DIRECTION = {
    "deletion_auc": -1,
    "insertion_auc": 1,
    "road_morf_auc": -1,
    "road_lerf_auc": 1,
    "sensitivity_n": 1,
}
REJUDGED = {
    "l1": ("L1 gradient penalty, CIFAR-10 (section 2)", "alpha", "0"),
    "fbi": ("FBI, MNIST (section 3)", "lambda", "0"),
    "decoy": ("Decoy MNIST (section 8)", "penalty", "baseline"),
}


def rejudged_rows(rows: list[dict], method: str) -> list[dict]:
    """Flat rows `{setting, seed, metric: value}` of one method."""
    flat = []
    for row in rows:
        values = dict(row["methods"][method])
        sn = row.get("sensitivity_n")
        if isinstance(sn, dict):
            sn = sn.get(METHOD_LABELS.get(method, method))
        if sn is not None:
            values["sensitivity_n"] = sn
        flat.append({"setting": row["setting"], "seed": row["seed"], **values})
    return flat


METHOD_LABELS = {"epsilon_lrp": "epsilon-LRP", "gradient_x_input": "gradient*input"}


def faithfulness_verdict(changes: dict) -> tuple[str, list[str], list[str]]:
    """`(verdict, agreeing, disagreeing)` from `{metric: paired change}`."""
    agree, disagree = [], []
    for metric, result in changes.items():
        sign = FAITHFUL_DIRECTION[metric]
        if result["label"] == "within noise" or result["label"] == "n/a":
            continue
        faithful = (result["label"] == "up beyond noise") == (sign > 0)
        (agree if faithful else disagree).append(metric)
    if agree and len(agree) == len(changes):
        return "by every metric", agree, disagree
    return ("by some" if agree else "by none"), agree, disagree


def report(result, outputs, docs) -> Section:
    """Section 9 of docs/RESULTS.md (faithfulness metrics)."""
    lines = [
        "## 9. The regularisers re-judged by faithfulness metrics they do not "
        "optimise (issue 21)",
        "",
        "Every win above is on Sensitivity-n or on a quantity the penalty itself "
        "lowers. Here the saved models of sections 2, 3 and 8 are scored by the "
        "deletion and insertion areas (Petsiuk et al. 2018; softmax probability "
        "of the true class, features set to 0, steps of 5%) and the ROAD areas "
        "(Rong et al. 2022; accuracy, noisy linear imputation, most- and "
        "least-relevant first, fractions 0.1 to 0.9), beside the experiment's "
        "own Sensitivity-n where it reports one, on "
        f"{result['settings']['samples']} fixed test inputs per experiment "
        f"({2 * result['settings']['samples']} for Decoy MNIST). Faithful: "
        "deletion and ROAD MoRF areas down, "
        "insertion, ROAD LeRF and Sensitivity-n up. Each cell: the paired-by-seed "
        "change against the unregularised models of the same seeds [95% CI]; "
        "✓ agrees (more faithful beyond noise), ✗ disagrees (less faithful "
        "beyond noise). Rules: docs/VERDICT_RULES.md, issue 21, written before "
        "the run.",
        "",
    ]
    summary = []
    for experiment, rows in result["results"].items():
        title, setting_name, base = REJUDGED[experiment]
        groups = sorted({row.get("model", "") for row in rows.values()})
        for group in groups:
            members = [r for r in rows.values() if r.get("model", "") == group]
            settings = sorted(
                {r["setting"] for r in members} - {base},
                key=lambda v: float(v) if experiment != "decoy" else v,
            )
            heading = title + (f", {group.upper()}" if group else "")
            verdicts = []
            for method in result["methods"][experiment]:
                flat = rejudged_rows(members, method)
                metrics = [m for m in FAITHFUL_DIRECTION if m in flat[0]]
                lines += [
                    f"**{heading}, {METHOD_LABELS.get(method, method)}** "
                    f"({len({r['seed'] for r in flat})} seeds):",
                    "",
                    f"| {setting_name} | " + " | ".join(metrics) + " | verdict |",
                    "| --- " * (len(metrics) + 2) + "|",
                ]
                for value in settings:
                    changes = {
                        m: paired(flat, "setting", value, lambda r, m=m: r[m], base)
                        for m in metrics
                    }
                    verdict, agree, disagree = faithfulness_verdict(changes)
                    verdicts.append((value, method, verdict, agree, disagree))
                    cells = []
                    for m in metrics:
                        mark = "✓" if m in agree else "✗" if m in disagree else ""
                        cells.append(f"{interval(changes[m], 3)} {mark}".strip())
                    lines.append(
                        f"| {value} | " + " | ".join(cells) + f" | {verdict} |"
                    )
                lines.append("")
            accuracy = {
                value: np.mean(
                    [
                        r["accuracy_on_scored_inputs"]
                        for r in members
                        if r["setting"] == value
                    ]
                )
                for value in [base, *settings]
            }
            lines += [
                "Accuracy on the scored inputs, mean over seeds: "
                + ", ".join(f"{k}: {v:.3f}" for k, v in accuracy.items())
                + ".",
                "",
            ]
            counts = {
                v: sum(1 for _, _, verdict, _, _ in verdicts if verdict == v)
                for v in ("by every metric", "by some", "by none")
            }
            agreeing = sorted({m for *_, agree, _ in verdicts for m in agree})
            against = sorted({m for *_, disagree in verdicts for m in disagree})
            summary.append(
                f"| 9. {heading}: more faithful by metrics it does not optimise? "
                "(issue 21) | (not claimed) | settings x methods: "
                + ", ".join(f"{n} {v}" for v, n in counts.items())
                + f"; metrics that agree somewhere: {', '.join(agreeing) or 'none'}"
                + f"; that disagree somewhere: {', '.join(against) or 'none'} | "
                + (
                    "by every metric"
                    if counts["by every metric"]
                    else "by some"
                    if counts["by some"]
                    else "by none"
                )
                + " |"
            )
    mixed = [
        row.split(": more faithful")[0].removeprefix("| 9. ")
        for row in summary
        if "; that disagree somewhere: none" not in row
        and "agree somewhere: none" not in row
    ]
    every = [row for row in summary if row.rstrip(" |").endswith("by every metric")]
    lines += [
        f"Reading: {len(every)} of {len(summary)} groups have a setting that is "
        "more faithful by every metric. In "
        f"{len(mixed)} of {len(summary)} groups some metric says more faithful "
        "and another less faithful beyond noise"
        + (f" ({'; '.join(mixed)})" if mixed else "")
        + ": the metrics do not agree with one another, so no single one of "
        "them (Sensitivity-n included) can carry a claim of better attributions.",
        "",
    ]
    return Section("\n".join(lines), summary)


if __name__ == "__main__":
    main()
