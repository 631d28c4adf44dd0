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
            regularizer = kar.FBILoss(lam=lam, eps=settings["eps"]) if lam else None
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


if __name__ == "__main__":
    main()
