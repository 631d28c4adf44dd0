"""Runs every experiment at CPU size, then writes docs/RESULTS.md from their JSONs.

The experiments are the list `EXPERIMENTS` (one script each in experiments/, run
in this order as subprocesses with their CPU-size defaults; wall-clock time
and load average recorded in `<output-dir>/timings.json`):

1. `bn_noise.py`: BatchNorm makes gradient maps noisy (Kiritoshi et al.).
2. `l1_alpha_sweep.py`: L1 gradient penalty on CIFAR-10, accuracy against
   Sensitivity-n over a sweep of alpha (Kiritoshi et al.).
3. `fbi_lambda_sweep.py`: FBI relevance regularisation on MNIST over a sweep
   of lambda (Yoo et al.).
4. `compare_attributions.py`: six attribution methods by Sensitivity-n, with
   Ancona et al.'s Tanh MLP and its ReLU twin.
5. `localisation.py`: attribution mass in the object's box on cluttered MNIST.
6. `text_imdb.py`: text (IMDB): Sensitivity-n over tokens of seven attribution
   methods on a text CNN and an LSTM, and the L1 penalty on the text CNN.
7. `lazy_regularization.py`: lazy regularisation (`every=k`, issue 11),
   the L1 penalty's effect and accuracy against k on MNIST, and with
   `--dataset cifar10` in the setting of 2 (after it: plain and every=1 are
   its runs).
8. `decoy_mnist.py`: annotation masks against a learned shortcut (Decoy
   MNIST, Ross et al. 2017; issue 19).

Adding an experiment: a script that writes `<output-dir>/results.json`, a
section function `(result, outputs, docs) -> Section`, and one `Experiment`
entry in `EXPERIMENTS`.

`docs/RESULTS.md` is written from the JSONs: each paper's number beside ours,
verdicts by the rules of `docs/VERDICT_RULES.md` (written before the runs),
the exact commands, wall times, and the figures copied to `docs/figures/`.
Each experiment's section sits between `<!-- section:NAME -->` markers; an
experiment whose outputs are absent keeps its section from the existing
report, so experiments can be run (and the report rebuilt) one at a time.
The report's summary table is also written between the
`<!-- results:start -->` and `<!-- results:end -->` markers of README.md.
Each sweep skips its finished runs and a stopped training resumes, so an
interrupted run only redoes what is left.

    python experiments/reproduce_all.py                 # a few hours on 2 cores
    python experiments/reproduce_all.py --only l1_alpha_sweep
    python experiments/reproduce_all.py --report-only   # rebuild the report
    python experiments/reproduce_all.py --quick         # every script on a tiny slice
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import scipy.stats

EXPERIMENTS_DIR = pathlib.Path(__file__).resolve().parent
ROOT = EXPERIMENTS_DIR.parent
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
SUMMARY_HEADER = (
    "| experiment | paper | ours (CPU size) | verdict |\n| --- | --- | --- | --- |"
)
# Yoo et al. 2019, Table 1 (conventional, FBI) per conv layer.
PAPER_FBI_MAX = [(1.377, 2.576), (1.270, 1.205), (0.941, 1.647), (2.355, 3.883)]
PAPER_FBI_MAX.append((14.741, 16.524))
PAPER_FBI_SKEW = [(0.603, 2.576), (1.484, 2.086), (0.806, 1.484), (0.707, 1.314)]
PAPER_FBI_SKEW.append((0.651, 1.012))
# Kiritoshi et al. 2019, Table 1 (accuracy on CIFAR-10, VGG with BatchNorm).
PAPER_L1_TABLE = {"VGG16": (0.713, 0.730), "VGG19": (0.730, 0.743)}
VERDICT_ORDER = ("not reproduced", "partly", "reproduced")
# The primary reading of Yoo et al.'s "skewness" (issue 20, finding 1;
# docs/fbi.md): the third standardised moment. `energy_skewness` (the wording
# read literally) is reported beside it as the alternative.
SKEWNESS = "moment_skewness"
FBI_STATS = ("max", SKEWNESS, "energy_skewness")
SKEW_CANDIDATES = {
    "moment_skewness": "third standardised moment (primary)",
    "energy_skewness": "mean(a^2) / Var(a) (literal wording)",
    "squared_variation": "Var(a) / mean(a)^2",
    "excess_kurtosis": "excess kurtosis",
}


CHANGES = (
    "2026-12-04, issue 19: the Decoy MNIST collapse rule was amended after the "
    "first baseline run and before any penalty run was looked at (the old "
    "rule compared decoy with clean accuracy, which cannot detect the "
    "collapse); section 8 gives the verdict under both versions "
    "(docs/VERDICT_RULES.md).",
    '2026-12-04, issue 20, finding 1: the FBI paper\'s "skewness" is now read '
    "as the third standardised moment. The reading used before, "
    "1/Var(a / sqrt(mean a^2)) = mean(a^2)/Var(a), is >= 1 for every "
    "non-negative activation and falls as activations get sparser, so it "
    "cannot be the paper's quantity (its Table 1 has values below 1); it is "
    'kept beside as an alternative, no longer called "the paper\'s skewness", '
    "and two more candidates are compared with the paper's magnitudes in "
    "section 3.",
    "2026-12-04, issue 20, finding 2: experiment 4's verdict had no \"not "
    'reproduced" branch and no written rule (it read "partly" although the '
    "spread grew with n on none of the three models, a spread that included "
    "Occlusion-1). A rule that can fail was committed before the rerun "
    "(docs/VERDICT_RULES.md) and section 4 is judged by it.",
    "2026-12-04, issue 20, finding 3: the README's figure and the mean L1 "
    "norms it quoted (14.9 vs 113.1) came from no committed output; the "
    "figure is now the sweep's maps (section 2) and a test checks that every "
    "figure the README and docs link exists and that every number in the "
    "README's results table appears in this report.",
    "2026-12-04, issue 20, finding 4: section 2's Table 1 verdict rested on "
    "d = -0.00547 against a threshold of 0.00541 with 3 seeds, unpaired. It "
    "is rerun with 5 seeds at alpha in {0, 1e-4, 1e-3} and judged by "
    "paired-by-seed differences with 95% intervals (rule committed before "
    "the runs); alpha 3e-4 and 3e-3 are no longer in the grid (their 3-seed "
    "results are in this file's git history, commit d11aa48). A constant "
    "learning rate is tested beside the cosine one (section 2c). Disclosure: "
    "an earlier, unconverged sweep (6,000 images, 6 epochs, 3 seeds; "
    'commit c009aa5) read Table 1 "partly"; the levelled-off 3-seed sweep '
    'of 14 epochs read "not reproduced".',
    "2026-12-04, issue 20, finding 1 (rerun): section 3 was rerun to measure the "
    "new readings (its earlier outputs were not kept); the rerun left out the "
    "cluttered-MNIST box part (`--box-seeds` with no seeds) for the time it "
    "takes, so the mass-in-box table and its summary row 3b are no longer in "
    "this report; their 3-seed figures are in this file's git history (commit "
    "9ed7d75 and later, up to commit a8999ca).",
    "2026-12-04, issue 20, finding 5: section 3c adds the readings of the FBI "
    "loss the paper leaves open (sum over units, pooling in K, normalised "
    "maps, inputs in [0, 1], relevance from all outputs), each an argument "
    "of `FBILoss`, with a rule for changing the default written before the "
    "runs.",
    "2026-12-04, issue 20, finding 6: the Fig. 4 rule required accuracy kept, "
    "which the paper's Fig. 4 (a Sensitivity-n claim) does not; and its "
    '"mean curve above at every n" counted 0.085 against 0.085 as above. '
    "Fig. 4 is now judged on Sensitivity-n alone, with the accuracy stated "
    'beside, and "partly" needs the mean curve clearly above (beyond seed '
    "noise) at half of the n values or more.",
)
"""Dated changes of rules and readings, newest last (issue 20: rules are
never silently rewritten after a run)."""


@dataclasses.dataclass
class Section:
    """One experiment's part of the report.

    Attributes:
        text: the markdown section.
        summary: rows of the summary table (`| experiment | paper | ours |
            verdict |`).
    """

    text: str
    summary: list[str]


def load(path: pathlib.Path):
    return json.loads(path.read_text()) if path.exists() else None


def pm(stat: dict, digits: int = 3) -> str:
    """'mean ± std' of a `mean_spread` dictionary."""
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def figure(outputs, docs, source: str, name: str, caption: str) -> str:
    path = outputs / source
    if not path.exists():
        return f"(figure {source} missing)\n"
    target = docs / "figures" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    return f"![{caption}](figures/{name})\n\n*{caption}*\n"


def change(stat: dict, base: dict) -> tuple[float, str]:
    """`(d, label)`: mean change from `base` and the rule's label for it.

    Clearly up / down if |d| exceeds the larger of the two seed stds
    (docs/VERDICT_RULES.md), else within noise.
    """
    d = stat["mean"] - base["mean"]
    noise = max(stat["std"], base["std"])
    if d > noise:
        return d, "clearly up"
    return d, "clearly down" if d < -noise else "within noise"


def paired(runs: list[dict], setting: str, value, quantity, base=0.0) -> dict:
    """Paired-by-seed change of `quantity(run)` at `run[setting] == value`
    against `run[setting] == base` (docs/VERDICT_RULES.md, issue 20).

    Returns `{"d", "low", "high", "label", "seeds"}`: the mean of the per-seed
    differences, its 95% Student-t interval and the label (up / down beyond
    noise when the interval excludes 0, within noise otherwise). Seeds with
    only one of the two runs are left out.
    """
    by_seed = {(r[setting], r["seed"]): quantity(r) for r in runs}
    seeds = sorted(s for v, s in by_seed if v == value and (base, s) in by_seed)
    diffs = np.array([by_seed[(value, s)] - by_seed[(base, s)] for s in seeds])
    d = float(diffs.mean())
    if len(diffs) < 2:
        return {"d": d, "low": np.nan, "high": np.nan, "label": "n/a", "seeds": seeds}
    half = scipy.stats.t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1)
    half /= np.sqrt(len(diffs))
    low, high = d - half, d + half
    label = (
        "up beyond noise"
        if low > 0
        else "down beyond noise"
        if high < 0
        else "within noise"
    )
    return {"d": d, "low": low, "high": high, "label": label, "seeds": seeds}


def interval(change: dict, digits: int = 4) -> str:
    """'+d [low, high] (label)' of a `paired` result."""
    return (
        f"{change['d']:+.{digits}f} [{change['low']:+.{digits}f}, "
        f"{change['high']:+.{digits}f}] ({change['label']})"
    )


def arrow(stat: dict, base: dict) -> str:
    """A table marker: up / down arrow when the change is outside seed noise."""
    label = change(stat, base)[1]
    return {"clearly up": " ↑", "clearly down": " ↓"}.get(label, "")


def section_bn_noise(result, outputs, docs) -> Section:
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


def levelling(runs: list[dict]) -> str:
    """Whether the learning curves levelled off: the gain over the last three
    epochs against 0.01, about the sampling noise of an accuracy on 2,000
    images (0.011)."""
    curves = [r["learning_curve"]["val_accuracy"] for r in runs]
    if min(map(len, curves)) < 4:
        return "Learning curves: fewer than 4 epochs, too short to judge."
    tails = np.array([curve[-4:] for curve in curves])
    last, three = tails[:, -1] - tails[:, -2], tails[:, -1] - tails[:, 0]
    return (
        "Learning curves (accuracy on the 2,000 held-out test images): over the "
        f"last epoch it changed by {last.mean():+.3f} on average over the "
        f"{len(runs)} runs, over the last three epochs by {three.mean():+.3f} "
        f"(range {three.min():+.3f} to {three.max():+.3f}). "
        + (
            "The runs had levelled off (gain over the last three epochs below "
            "0.01, about the sampling noise of 2,000 images)."
            if three.mean() < 0.01
            else "**The runs had not levelled off** (gain over the last three "
            "epochs above 0.01, about the sampling noise of 2,000 images); the "
            "last epoch is flat only because the learning rate decays to 0. A "
            "longer schedule would reach a higher accuracy, and the verdicts "
            "below hold for these short runs only."
        )
    )


def section_l1_sweep(result, outputs, docs) -> Section:
    settings, summary, runs = result["settings"], result["summary"], result["runs"]
    keys = sorted(summary, key=float)
    base = summary["0"]
    n_values = result["n_values"]
    seeds = base["seeds"]
    penalised = [k for k in keys if float(k) > 0]
    # Issue 20 rules: paired-by-seed differences with 95% intervals.
    acc_paired = {k: paired(runs, "alpha", float(k), accuracy_of) for k in penalised}
    sn_paired = {
        k: paired(runs, "alpha", float(k), lambda r: r["sensitivity_n_mean"])
        for k in penalised
    }
    keeps = {k: acc_paired[k]["label"] != "down beyond noise" for k in penalised}
    raises = {k: sn_paired[k]["label"] == "up beyond noise" for k in penalised}
    both = [k for k in penalised if keeps[k] and raises[k]]
    higher_kept = [k for k in penalised if keeps[k] and sn_paired[k]["d"] > 0]
    table1 = "reproduced" if both else "partly" if higher_kept else "not reproduced"
    curves = {
        (r["alpha"], r["seed"]): np.array(r["sensitivity_n"]["correlation"])
        for r in runs
    }
    every_seed = {
        k: all(np.all(curves[(float(k), s)] > curves[(0.0, s)]) for s in seeds)
        for k in penalised
    }
    per_n = {k: curve_changes(summary[k], base) for k in penalised}
    mostly_up = {
        k: per_n[k].count("clearly up") >= len(n_values) / 2
        and "clearly down" not in per_n[k]
        for k in penalised
    }
    fig4 = (
        "reproduced"
        if any(every_seed.values())
        else "partly"
        if any(mostly_up.values())
        else "not reproduced"
    )
    drops = [k for k in penalised if not keeps[k]]
    accuracy_up = [k for k in penalised if acc_paired[k]["label"] == "up beyond noise"]
    best = max(both or higher_kept or penalised, key=lambda k: sn_paired[k]["d"])
    lines = [
        "## 2. L1 gradient penalty on CIFAR-10: alpha sweep (Kiritoshi et al. 2019, "
        "Table 1 and Fig. 4)",
        "",
        "Paper: a VGG16/VGG19 with BatchNorm on all of CIFAR-10; the penalty "
        "L' = L + alpha * |dS_c/dx|_1 leaves accuracy unharmed (Table 1: VGG16 "
        "0.713 -> 0.730, VGG19 0.730 -> 0.743) and raises the modified "
        "Sensitivity-n for every n (Fig. 4). No alpha, epochs or augmentation "
        "are stated.",
        "",
        f"Ours: `--arch {settings['arch']}` "
        + (
            "(a narrow VGG: conv 2x16, 2x32, 2x64 with BatchNorm after every "
            "conv, three max pools, dense 64, dense 10) "
            if settings["arch"] == "small"
            else ""
        )
        + f"on the first {settings['train_size'] or 50000} of the 50,000 training "
        "images (TFRecords), augmented with random translations of up to 4 pixels "
        "(filled with the training mean) and horizontal flips; batch "
        f"{settings['batch_size']}, Adam with the learning rate cosine-decayed "
        f"from 1e-3 to 0 over {settings['epochs']} epochs; alpha in "
        f"{{{', '.join(keys)}}}, seeds {', '.join(map(str, seeds))} (each seed: "
        "the same initial weights and data order for every alpha). Test accuracy "
        f"on {settings['test_size'] or 'all 10000'} test images; modified "
        "Sensitivity-n (|Pearson|) of the signed vanilla gradient over "
        f"{settings['sn_samples']} test images, {settings['num_subsets']} subsets "
        "per n, removed pixels set to 0 (the training mean), n in "
        f"{{{', '.join(map(str, n_values))}}}; `SN` = its mean over n. The "
        "localisation score (experiment 5) needs object boxes, which CIFAR-10 "
        "lacks: it is measured on cluttered MNIST in section 5. The network "
        "and the training subset are sized for a sweep of about 90 minutes on "
        "the 2-core CPU machine (wall time in the table at the top); whether "
        "the runs levelled off is stated below the tables.",
        "",
        "Every run (alpha x seed):",
        "",
        "| alpha | seed | test accuracy | SN | mean L1 norm of dS_c/dx | accuracy "
        "on 2,000 test images per epoch | train time |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in sorted(runs, key=lambda r: (r["alpha"], r["seed"])):
        curve = " ".join(f"{v:.2f}" for v in r["learning_curve"]["val_accuracy"])
        lines.append(
            f"| {r['alpha']:g} | {r['seed']} | {r['test_accuracy']:.4f} "
            f"| {r['sensitivity_n_mean']:.3f} | {r['mean_l1_input_gradient']:.1f} "
            f"| {curve} | {r['train_seconds'] / 60:.1f} min |"
        )
    lines += [
        "",
        "Per alpha, mean ± std over seeds; the change against alpha = 0 paired by "
        "seed (the mean of the per-seed differences, its 95% Student-t interval "
        "and the label of docs/VERDICT_RULES.md, issue 20: beyond noise when the "
        "interval excludes 0):",
        "",
        "| alpha | test accuracy | paired accuracy change [95% CI] | SN | "
        "paired SN change [95% CI] | mean L1 norm of dS_c/dx |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for k in keys:
        row = summary[k]
        acc_cell = interval(acc_paired[k]) if k in acc_paired else "(reference)"
        sn_cell = interval(sn_paired[k], 3) if k in sn_paired else "(reference)"
        lines.append(
            f"| {k} | {pm(row['test_accuracy'], 4)} | {acc_cell} | "
            f"{pm(row['sensitivity_n_mean'])} | {sn_cell} | "
            f"{pm(row['mean_l1_input_gradient'], 1)} |"
        )
    lines += [
        "",
        "Modified Sensitivity-n per n (|Pearson|, mean ± std over seeds):",
        "",
        "| alpha \\ n | " + " | ".join(map(str, n_values)) + " |",
        "| --- " * (len(n_values) + 1) + "|",
    ]
    for k in keys:
        curve = summary[k]["sensitivity_n_curve"]
        lines.append(
            f"| {k} | "
            + " | ".join(
                f"{m:.3f} ± {d:.3f}"
                for m, d in zip(curve["mean"], curve["std"], strict=True)
            )
            + " |"
        )
    lines += [
        "",
        levelling(runs),
        "",
        "Verdicts (rules written before the runs, docs/VERDICT_RULES.md):",
        "",
        "- alpha not costing accuracy (paired interval not below 0): "
        f"{', '.join(k for k in penalised if keeps[k]) or 'none'}; raising SN "
        f"beyond noise: {', '.join(k for k in penalised if raises[k]) or 'none'}; "
        f"both: {', '.join(both) or 'none'}. **Accuracy first costs beyond noise "
        f"at alpha = {drops[0] if drops else 'no alpha of this grid'}**"
        + (f" (paired change {interval(acc_paired[drops[0]])})." if drops else ".")
        + " Accuracy up beyond noise (the paper's +0.017 / +0.013): "
        f"{', '.join(accuracy_up) or 'at no alpha'}.",
        f"- **Table 1 (accuracy kept while the penalty improves the attributions): "
        f"{table1}.**"
        + (
            " Lower end of the accuracy interval at the alphas that keep it: "
            + ", ".join(f"{k}: {acc_paired[k]['low']:+.4f}" for k in both)
            + "."
            if both
            else ""
        ),
        "- Fig. 4 (a Sensitivity-n claim; accuracy is judged by Table 1), "
        "penalised curve above the same seed's alpha = 0 curve at every n in "
        "every seed: "
        + ", ".join(f"alpha={k}: {every_seed[k]}" for k in penalised)
        + "; n values where the mean curve is clearly above / clearly below: "
        + ", ".join(
            f"alpha={k}: {per_n[k].count('clearly up')} / "
            f"{per_n[k].count('clearly down')} of {len(n_values)}"
            for k in penalised
        )
        + f". **Fig. 4: {fig4}**"
        + (
            " (at alpha "
            + ", ".join(
                f"{k}, accuracy change {acc_paired[k]['d']:+.4f}"
                for k in penalised
                if every_seed[k]
            )
            + ")."
            if any(every_seed.values())
            else "."
        ),
        "",
        figure(
            outputs,
            docs,
            "l1_alpha_sweep/pareto.png",
            "l1_pareto.png",
            "Test accuracy against mean modified Sensitivity-n, one point per "
            "alpha, error bars one seed std (the Pareto front).",
        ),
        figure(
            outputs,
            docs,
            "l1_alpha_sweep/learning_curves.png",
            "l1_learning_curves.png",
            "Learning curves: accuracy on 2,000 test images per epoch, one line "
            "per run.",
        ),
        figure(
            outputs,
            docs,
            "l1_alpha_sweep/sensitivity_n.png",
            "l1_sensitivity_n.png",
            "Modified Sensitivity-n per alpha, mean ± std over seeds (paper: Fig. 4).",
        ),
        figure(
            outputs,
            docs,
            "l1_alpha_sweep/maps.png",
            "l1_maps.png",
            "Vanilla gradient of the first seed's model per alpha (paper: Fig. 3).",
        ),
    ]
    b, c = base, summary[best]
    summary_rows = [
        f"| 2a. L1 penalty keeps accuracy (L1 paper, Table 1) | VGG16 0.713 -> "
        f"0.730 | narrow VGG, {settings['train_size'] or 50000} CIFAR images, "
        f"{settings['epochs']} epochs, {len(seeds)} seeds: alpha 0 "
        f"{b['test_accuracy']['mean']:.3f} -> alpha {best} "
        f"{c['test_accuracy']['mean']:.3f} (paired change "
        f"{interval(acc_paired[best])}; SN {b['sensitivity_n_mean']['mean']:.3f}"
        f" -> {c['sensitivity_n_mean']['mean']:.3f}); accuracy first costs beyond "
        f"noise at alpha {drops[0] if drops else '(none)'} | {table1} |",
        f"| 2b. L1 penalty raises modified Sensitivity-n (Fig. 4) | higher for "
        f"every n | every n, every seed at alpha "
        f"{', '.join(k for k in penalised if every_seed[k]) or 'none'} | {fig4} |",
    ]
    return Section("\n".join(lines), summary_rows)


def accuracy_of(run: dict) -> float:
    return run["test_accuracy"]


def curve_changes(row: dict, base: dict) -> list[str]:
    """Per n, the label of the mean Sensitivity-n change against `base` (the
    `d > noise` rule at the top of docs/VERDICT_RULES.md)."""
    curve, ref = row["sensitivity_n_curve"], base["sensitivity_n_curve"]
    return [
        change({"mean": m, "std": s}, {"mean": m0, "std": s0})[1]
        for m, s, m0, s0 in zip(
            curve["mean"], curve["std"], ref["mean"], ref["std"], strict=True
        )
    ]


def section_l1_schedule(constant: dict, outputs, docs) -> Section:
    """The learning-rate schedule check (issue 20): the paired accuracy change
    at each alpha of the constant-rate runs, beside the cosine runs' change
    on the same seeds (section 2's sweep)."""
    sweep = load(outputs / "l1_alpha_sweep" / "results.json")
    if not sweep:
        text = (
            "## 2c. L1 penalty: the learning-rate schedule\n\nNeeds section 2's runs."
        )
        return Section(text, [])
    runs, cosine_runs = constant["runs"], sweep["runs"]
    alphas = sorted({r["alpha"] for r in runs if r["alpha"] > 0})
    seeds = sorted({r["seed"] for r in runs})
    lines = [
        "## 2c. L1 penalty: the learning-rate schedule (issue 20, finding 4)",
        "",
        "An independent single-seed run with a constant learning rate saw "
        "accuracy *up* at alpha = 1e-3 (0.636 -> 0.657, 10k images, 15 epochs), "
        "where section 2's cosine-decayed runs see it down. Here Adam runs at a "
        f"constant {constant['settings']['learning_rate']:g} for "
        f"{constant['settings']['epochs']} epochs on section 2's data and "
        f"network, seeds {', '.join(map(str, seeds))}; each run's accuracy is the "
        "mean of its last 3 epochs on all 10,000 test images. Against section "
        "2's cosine runs on the same seeds; paired accuracy change against "
        "alpha = 0 [95% CI] (docs/VERDICT_RULES.md, issue 20):",
        "",
        "| alpha | schedule | accuracy, alpha = 0 | accuracy | "
        "paired change [95% CI] |",
        "| --- | --- | --- | --- | --- |",
    ]
    labels = {}
    for alpha in alphas:
        for name, source in (("cosine", cosine_runs), ("constant", runs)):
            rows = [r for r in source if r["seed"] in seeds]
            result = paired(rows, "alpha", alpha, accuracy_of)
            labels[(alpha, name)] = result["label"]
            mean = {
                a: np.mean([r["test_accuracy"] for r in rows if r["alpha"] == a])
                for a in (0.0, alpha)
            }
            lines.append(
                f"| {alpha:g} | {name} | {mean[0.0]:.4f} | {mean[alpha]:.4f} | "
                f"{interval(result)} |"
            )
    lines.append("")
    for alpha in alphas:
        same = labels[(alpha, "cosine")] == labels[(alpha, "constant")]
        lines.append(
            f"At alpha = {alpha:g} the schedule "
            + ("does not change the reading" if same else "**changes the reading**")
            + f" (cosine: {labels[(alpha, 'cosine')]}, constant: "
            f"{labels[(alpha, 'constant')]})."
        )
    changed = [a for a in alphas if labels[(a, "cosine")] != labels[(a, "constant")]]
    row = (
        "| 2c. The L1 penalty's accuracy cost under a constant learning rate "
        f"(issue 20) | (no schedule stated) | {len(seeds)} seeds, paired change at "
        + ", ".join(
            f"alpha {a:g}: cosine {labels[(a, 'cosine')]}, constant "
            f"{labels[(a, 'constant')]}"
            for a in alphas
        )
        + " | "
        + ("the schedule changes the reading" if changed else "same reading")
        + " |"
    )
    return Section("\n".join(lines), [row])


def fbi_verdict(counts: dict, accuracy_label: str) -> str:
    """Table 1 verdict at one lambda (docs/VERDICT_RULES.md)."""
    paper_max = sum(b > a for a, b in PAPER_FBI_MAX)
    paper_skew = sum(b > a for a, b in PAPER_FBI_SKEW)
    skew = counts[SKEWNESS]
    counts_met = counts["max"] >= paper_max and skew >= paper_skew
    if counts_met and accuracy_label != "clearly down":
        return "reproduced"
    if counts_met or counts["max"] + skew >= 6:
        return "partly"
    return "not reproduced"


def fbi_judgements(summary: dict, lams: list[str]) -> tuple[dict, dict, dict]:
    """`(counts, verdicts, accuracy)` per lambda against `summary["0"]`: layers
    clearly up / down per Table 1 statistic, the verdict of
    docs/VERDICT_RULES.md and the accuracy change."""
    base = summary["0"]
    layers = list(base["table1"]["max"])
    counts, verdicts, accuracy = {}, {}, {}
    for k in lams:
        table = summary[k]["table1"]
        counts[k] = {
            key: {
                label: sum(
                    change(table[key][layer], base["table1"][key][layer])[1] == label
                    for layer in layers
                )
                for label in ("clearly up", "clearly down")
            }
            for key in table
            if key in base["table1"]
        }
        accuracy[k] = change(summary[k]["test_accuracy"], base["test_accuracy"])
        verdicts[k] = fbi_verdict(
            {key: counts[k][key]["clearly up"] for key in FBI_STATS}, accuracy[k][1]
        )
    return counts, verdicts, accuracy


def table1_lines(summary: dict, keys: list[str]) -> list[str]:
    """Table 1 per conv layer and lambda (max, the skewness readings, the share
    of zeros when measured), mean ± std with arrows against lambda = 0; and
    each skewness candidate of the conventional model beside the paper's."""
    base = summary["0"]
    layers = list(base["table1"]["max"])
    titles = {
        "max": "Max activation",
        SKEWNESS: "Skewness, the third standardised moment (primary reading, "
        "docs/fbi.md)",
        "energy_skewness": "Alternative reading: 1 / variance of the "
        "energy-normalised activations, mean(a^2) / Var(a) (>= 1 by construction)",
        "zero_fraction": "Share of zero activations",
    }
    lines = []
    for key, title in titles.items():
        if key not in base["table1"]:
            continue
        lines += [
            "",
            f"{title} per conv layer, mean ± std over seeds:",
            "",
            "| lambda | " + " | ".join(layers) + " |",
            "| --- " * (len(layers) + 1) + "|",
        ]
        if key in ("max", SKEWNESS):
            paper = PAPER_FBI_MAX if key == "max" else PAPER_FBI_SKEW
            lines.append(
                "| paper (conv. / FBI at 0.001) | "
                + " | ".join(f"{a:.3f} / {b:.3f}" for a, b in paper)
                + " |"
            )
        for k in keys:
            cells = summary[k]["table1"][key]
            lines.append(
                f"| {k} | "
                + " | ".join(
                    pm(cells[layer]) + arrow(cells[layer], base["table1"][key][layer])
                    for layer in layers
                )
                + " |"
            )
    found = [key for key in SKEW_CANDIDATES if key in base["table1"]]
    lines += [
        "",
        "The skewness readings of the conventional model (lambda = 0) beside the "
        "paper's conventional column (issue 20, finding 1: which reading has the "
        "paper's magnitudes?):",
        "",
        "| reading | " + " | ".join(layers) + " |",
        "| --- " * (len(layers) + 1) + "|",
        "| paper, conventional | "
        + " | ".join(f"{a:.3f}" for a, _ in PAPER_FBI_SKEW)
        + " |",
        *(
            f"| {SKEW_CANDIDATES[key]} | "
            + " | ".join(
                f"{base['table1'][key][layer]['mean']:.3f}" for layer in layers
            )
            + " |"
            for key in found
        ),
    ]
    return lines


def verdict_lines(counts, verdicts, accuracy, lams) -> list[str]:
    """The per-lambda verdict table of experiment 3."""
    lines = [
        "Verdicts per lambda (docs/VERDICT_RULES.md; paper: 4/5 layers up for the "
        "max, 5/5 for the skewness), layers clearly up / clearly down:",
        "",
        "| lambda | max | skewness (3rd moment) | alternative (energy) | accuracy "
        "| verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for k in lams:
        c = counts[k]
        lines.append(
            f"| {k} | "
            + " | ".join(
                f"{c[key]['clearly up']} / {c[key]['clearly down']}"
                for key in FBI_STATS
            )
            + f" | {accuracy[k][0]:+.4f} ({accuracy[k][1]}) | {verdicts[k]} |"
        )
    return lines


def box_cell(stat: dict, base: dict) -> str:
    """'mean ± std' with the arrow against `base`; the mean alone for one
    seed; n/a when undefined (NaN)."""
    if np.isnan(stat["mean"]):
        return "n/a"
    if len(stat["values"]) == 1:
        return f"{stat['mean']:.3f}"
    return pm(stat) + arrow(stat, base)


def section_fbi_sweep(result, outputs, docs) -> Section:
    settings, summary, runs = result["settings"], result["summary"], result["runs"]
    keys = sorted(summary, key=float)
    base = summary["0"]
    lams = [k for k in keys if float(k) > 0]
    stats = FBI_STATS
    counts, verdicts, accuracy = fbi_judgements(summary, lams)
    best = max(lams, key=lambda k: (VERDICT_ORDER.index(verdicts[k]), -float(k)))
    seeds = base["seeds"]
    lines = [
        "## 3. FBI relevance regularisation: lambda sweep (Yoo et al. 2019, Table 1)",
        "",
        "Paper: lambda = 0.001 only; FBI larger than conventional training in 4/5 "
        "conv layers for the max activation and 5/5 for the skewness (Table 1).",
        "",
        f"Ours: the AlexNet-like CNN of `experiments/fbi_mnist.py` (conv 16, 16, 32, "
        f"32, 32), the first {settings['train_size'] or 60000} training digits, "
        f"{settings['epochs']} epochs, batch {settings['batch_size']}, Adam 1e-3; "
        f"lambda in {{{', '.join(keys)}}} (0: conventional), the FBI loss switched "
        f"on once validation accuracy (first {settings['val_size']} test digits) "
        f"exceeds {settings['threshold']:.0%}; seeds {', '.join(map(str, seeds))} "
        "(per seed the same initial weights and data order for every lambda). "
        "Test accuracy on all 10,000 test digits; L_FBI of the validation "
        f"digits; Table 1 statistics on {settings['analysis_size']} test digits; "
        "Sensitivity-n (signed Pearson, removed pixels set to 0 = the training "
        f"mean) of epsilon-LRP and gradient*input over the last "
        f"{settings['sn_samples']} test digits, {settings['num_subsets']} subsets, "
        f"{settings['n_points']} values of n from 1 to 627, averaged over n. "
        "Smaller than the issue's setting (the whole sweep had to share a "
        "2-core machine with other jobs).",
        "",
        "Every run (lambda x seed); max and skewness (third standardised moment) "
        "of conv1..conv5:",
        "",
        "| lambda | seed | test accuracy | L_FBI | FBI on from epoch | Sensitivity-n "
        "eps-LRP | Sensitivity-n grad*input | max | skewness |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in sorted(runs, key=lambda r: (r["lam"], r["seed"])):
        sn = r["sensitivity_n"]
        lines.append(
            f"| {r['lam']:g} | {r['seed']} | {r['test_accuracy']:.4f} | "
            f"{r['test_fbi_loss']:.4f} | "
            f"{'-' if r['lam'] == 0 else r['fbi_switched_on_at_epoch']} | "
            f"{sn['epsilon-LRP']['mean_over_n']:.3f} | "
            f"{sn['gradient*input']['mean_over_n']:.3f} | "
            + " ".join(f"{row['max']:.2f}" for row in r["table1"])
            + " | "
            + " ".join(f"{row[SKEWNESS]:.3f}" for row in r["table1"])
            + " |"
        )
    lines += [
        "",
        "Per lambda, mean ± std over seeds (↑ / ↓: clearly up / down against "
        "lambda = 0, beyond the larger seed std):",
        "",
        "| lambda | test accuracy | L_FBI | Sensitivity-n eps-LRP | Sensitivity-n "
        "grad*input |",
        "| --- | --- | --- | --- | --- |",
    ]
    for k in keys:
        row = summary[k]
        sn, sn0 = row["sensitivity_n_mean"], base["sensitivity_n_mean"]
        lines.append(
            f"| {k} | {pm(row['test_accuracy'], 4)}"
            f"{arrow(row['test_accuracy'], base['test_accuracy'])} | "
            f"{pm(row['test_fbi_loss'], 4)}"
            f"{arrow(row['test_fbi_loss'], base['test_fbi_loss'])} | "
            + " | ".join(
                f"{pm(sn[m])}{arrow(sn[m], sn0[m])}"
                for m in ("epsilon-LRP", "gradient*input")
            )
            + " |"
        )
    lines += table1_lines(summary, keys)
    box_rows = [k for k in keys if summary[k]["box"]]
    if box_rows:
        box_seeds = summary[box_rows[0]]["box"]["seeds"]
        switch = settings.get("box_threshold")
        lines += [
            "",
            f"Mass in box on cluttered MNIST (the same network for 56x56 canvases, "
            f"{settings['box_train_size']} training / {settings['box_test_size']} "
            f"test canvases, {settings['box_epochs']} epochs, FBI loss on "
            + (
                "from the first step"
                if switch is None
                else f"above {switch:.0%} validation accuracy"
            )
            + ", seed(s) "
            f"{', '.join(map(str, box_seeds))}; share of |R| inside the digit's "
            f"box, chance level {result['box_chance_mass_in_box']:.3f}; training "
            "time of these runs "
            f"{sum(r['train_seconds'] for r in result['box_runs']) / 60:.1f} min):",
            "",
            "| lambda | test accuracy | FBI on from epoch | mass in box eps-LRP | "
            "mass in box vanilla gradient |",
            "| --- | --- | --- | --- | --- |",
        ]
        box_runs = {(r["lam"], r["seed"]): r for r in result["box_runs"]}
        box0 = summary["0"]["box"]
        for k in box_rows:
            row = summary[k]["box"]
            switched = [
                box_runs[(float(k), s)]["fbi_switched_on_at_epoch"] for s in box_seeds
            ]
            if switch is None:
                switched = "from the start" if float(k) else "-"
            lines.append(
                f"| {k} | {box_cell(row['test_accuracy'], box0['test_accuracy'])} "
                f"| {switched} | "
                + " | ".join(
                    box_cell(row["mass_in_box"][m], box0["mass_in_box"][m])
                    for m in ("epsilon-LRP", "vanilla gradient")
                )
                + " |"
            )
        lines += [
            "",
            "↑ / ↓: clearly up / down against lambda = 0 (beyond the larger seed "
            "std). n/a: every map of that model is zero (the network did not "
            "learn: accuracy at chance), so the mass in box is undefined."
            + (
                " One seed: these differences are not tested against seed noise."
                if len(box_seeds) == 1
                else ""
            ),
        ]
    lines += [
        "",
        *verdict_lines(counts, verdicts, accuracy, lams),
    ]
    paper_lam = verdicts.get("0.001", "not run")
    top = lams[-1]
    most = {key: max(counts[k][key]["clearly up"] for k in lams) for key in stats}
    lrp_gxi = max(
        abs(
            r["sensitivity_n"]["epsilon-LRP"]["mean_over_n"]
            - r["sensitivity_n"]["gradient*input"]["mean_over_n"]
        )
        for r in runs
    )
    lines += [
        "",
        f"**Verdict on Table 1: {verdicts[best]}**"
        + (
            f" (best lambda: {best})"
            if verdicts[best] != "not reproduced"
            else " (at every lambda)"
        )
        + f"; at the paper's lambda = 0.001: {paper_lam}. At the largest lambda "
        f"({top}) the max is clearly down in {counts[top]['max']['clearly down']}/5 "
        f"layers and the skewness clearly up in "
        f"{counts[top][SKEWNESS]['clearly up']}/5 (the literal reading: clearly "
        f"down in {counts[top]['energy_skewness']['clearly down']}/5), while L_FBI is "
        f"{change(summary[top]['test_fbi_loss'], base['test_fbi_loss'])[1]} "
        "(the regulariser does lower its own loss). Sensitivity-n of epsilon-LRP "
        "and gradient*input differ by at most "
        f"{lrp_gxi:.1e} in any run: on this ReLU network they coincide, as "
        "Ancona et al. prove.",
    ]
    summary_rows = [
        "| 3. FBI raises activation max / skewness (FBI paper, Table 1) | 4/5 and "
        f"5/5 layers at lambda 0.001 | lambda {', '.join(lams)}, {len(seeds)} "
        f"seeds: max clearly up in at most {most['max']}/5 layers, skewness (3rd "
        f"moment) in at most {most[SKEWNESS]}/5; at lambda {top} the max is clearly "
        f"down in {counts[top]['max']['clearly down']}/5 | {verdicts[best]} |"
    ]
    if box_rows:
        mass = {k: summary[k]["box"]["mass_in_box"]["epsilon-LRP"] for k in box_rows}
        summary_rows.append(
            "| 3b. FBI and the epsilon-LRP mass in the digit's box, cluttered MNIST "
            "(new) | (not measured) | "
            + ", ".join(
                f"lambda {k}: "
                + ("n/a" if np.isnan(m["mean"]) else f"{m['mean']:.3f}")
                + (
                    f" ({change(m, mass['0'])[1]})"
                    if k != "0" and not np.isnan(m["mean"])
                    else ""
                )
                for k, m in mass.items()
            )
            + " | - |"
        )
    return Section("\n".join(lines), summary_rows)


READING_TEXT = {
    "default": "section 3's reading: mean over the units, K = the layers with a "
    "kernel, raw maps, standardised inputs, relevance from the true-class logit",
    "sum": "the L1 summed over the units (`reduction='sum'`)",
    "pooling_in_k": "pooling layers counted in K (`layers='kernel_and_pooling'`)",
    "normalised": "each map divided by its own L1 norm (`normalize=True`)",
    "unit_inputs": "pixels in [0, 1]",
    "all_outputs": "relevance started from every logit (`start='all'`)",
}


def layer_cells(row: dict, base: dict, key: str, digits: int) -> str:
    """The per-layer means of one Table 1 statistic, arrows against `base`."""
    return " ".join(
        f"{stat['mean']:.{digits}f}" + arrow(stat, base["table1"][key][layer]).strip()
        for layer, stat in row["table1"][key].items()
    )


def section_fbi_readings(result, outputs, docs) -> Section:
    settings, summaries = result["settings"], result["summary"]
    readings = list(summaries)
    best, judged = {}, {}
    for reading in readings:
        summary = summaries[reading]
        lams = sorted((k for k in summary if float(k) > 0), key=float)
        judged[reading] = (lams, *fbi_judgements(summary, lams))
        _, counts, verdicts, accuracy = judged[reading]
        best[reading] = max(
            lams,
            key=lambda k, v=verdicts, c=counts: (
                VERDICT_ORDER.index(v[k]),
                c[k]["max"]["clearly up"] + c[k][SKEWNESS]["clearly up"],
                -float(k),
            ),
        )
    seeds = sorted({s for v in summaries.values() for s in v["0"]["seeds"]})
    lines = [
        "## 3c. FBI: the readings the paper leaves open (issue 20, finding 5)",
        "",
        "Section 3's reading is one of several the paper allows. Each other "
        "reading changes one choice (`FBILoss` arguments, docs/fbi.md), with "
        "the network, data and schedule of section 3 (the first "
        f"{settings['train_size']} training digits, {settings['epochs']} epochs, "
        f"FBI on above {settings['threshold']:.0%} validation accuracy), lambda "
        "in {0.001, 0.01, 0.1}, seeds "
        f"{', '.join(map(str, seeds))}; Table 1 on {settings['analysis_size']} "
        "test digits; each reading against its own lambda = 0 runs (plain "
        "training from the same seeds, L_FBI measured in the reading's loss). "
        "Rules: docs/VERDICT_RULES.md (issue 20, experiment 3b), written "
        "before the runs. Cells: per conv layer conv1..conv5, the mean over "
        "seeds, ↑ / ↓ clearly up / down against lambda = 0 (beyond the larger "
        "seed std); counts: layers clearly up / clearly down.",
        "",
    ]
    for reading in readings:
        summary = summaries[reading]
        lams, counts, verdicts, accuracy = judged[reading]
        base = summary["0"]
        lines += [
            f"**{reading}**: {READING_TEXT.get(reading, reading)}.",
            "",
            "| lambda | test accuracy | L_FBI (own reading) | max | skewness (3rd "
            "moment) | share of zeros | max up / down | skewness up / down | "
            "zeros up / down | verdict |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for k in ["0", *lams]:
            row = summary[k]
            tally = (
                [
                    f"{counts[k][key]['clearly up']} / {counts[k][key]['clearly down']}"
                    for key in ("max", SKEWNESS, "zero_fraction")
                ]
                if k != "0"
                else ["-", "-", "-"]
            )
            lines.append(
                f"| {k} | {pm(row['test_accuracy'], 4)}"
                f"{arrow(row['test_accuracy'], base['test_accuracy'])} | "
                f"{pm(row['test_fbi_loss'], 4)}"
                f"{arrow(row['test_fbi_loss'], base['test_fbi_loss'])} | "
                f"{layer_cells(row, base, 'max', 2)} | "
                f"{layer_cells(row, base, SKEWNESS, 2)} | "
                f"{layer_cells(row, base, 'zero_fraction', 2)} | "
                + " | ".join(tally)
                + f" | {verdicts.get(k, '(reference)')} |"
            )
        shrink = max(counts[k]["max"]["clearly down"] for k in lams)
        lines += [
            "",
            f"Best verdict: **{verdicts[best[reading]]}** (lambda {best[reading]}); "
            f"the max clearly down in up to {shrink}/5 layers.",
            "",
        ]
    default_rank = VERDICT_ORDER.index(judged["default"][2][best["default"]])
    better = [
        r
        for r in readings
        if VERDICT_ORDER.index(judged[r][2][best[r]]) > default_rank
        and judged[r][3][best[r]][1] != "clearly down"
    ]
    if better:
        recommended = max(
            better,
            key=lambda r: (
                VERDICT_ORDER.index(judged[r][2][best[r]]),
                judged[r][1][best[r]]["max"]["clearly up"]
                + judged[r][1][best[r]][SKEWNESS]["clearly up"],
                -float(best[r]),
            ),
        )
    else:
        recommended = "default"
    lines += [
        "**Recommended reading (rule of experiment 3b): "
        f"{recommended}**"
        + (
            " (no reading has a better Table 1 verdict than section 3's, so "
            "`FBILoss`'s defaults stay as they are)."
            if recommended == "default"
            else f" (best verdict {judged[recommended][2][best[recommended]]} at "
            f"lambda {best[recommended]})."
        ),
    ]
    row = (
        "| 3c. FBI readings the paper leaves open (issue 20) | 4/5 and 5/5 layers "
        "up | best verdict per reading, "
        f"{len(seeds)} seeds: "
        + "; ".join(f"{r} {judged[r][2][best[r]]}" for r in readings)
        + f" | recommended: {recommended} |"
    )
    return Section("\n".join(lines), [row])


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


def section_faithfulness(result, outputs, docs) -> Section:
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


def method_table(model_name: str, row: dict) -> list[str]:
    """One model's Sensitivity-n table: a row per method, mean ± std over seeds."""
    n_values = row["n_values"]
    lines = [
        f"**{model_name}** (test accuracy {pm(row['test_accuracy'])}): mean "
        "correlation over seeds (± std)",
        "",
        "| method \\ n | " + " | ".join(str(n) for n in n_values) + " |",
        "| --- " * (len(n_values) + 1) + "|",
    ]
    for method, curve in row["curves_mean"].items():
        spread = row["curves_std"][method] or [0.0] * len(curve)
        lines.append(
            f"| {method} | "
            + " | ".join(f"{m:.2f}±{d:.2f}" for m, d in zip(curve, spread, strict=True))
            + " |"
        )
    return lines


GRADIENT_BASED = (
    "gradient*input",
    "integrated gradients",
    "epsilon-LRP",
    "DeepLIFT-Rescale",
)


def section_compare(result, outputs, docs) -> Section:
    settings = result["settings"]
    seeds = len(settings["seeds"])
    lines = [
        "## 4. Attribution methods by Sensitivity-n (Ancona et al. 2018)",
        "",
        "The stored text of the paper (`../shared/papers/002_*.txt`) holds only "
        "its abstract, so no paper number is quoted: we check the findings named "
        "in the project issue (methods agree on simple models and diverge for "
        "larger n) and two consequences of the paper's analysis (epsilon-LRP "
        "equals gradient*input on ReLU networks; Occlusion-1 is exactly S_1, so "
        "its correlation at n = 1 is 1).",
        "",
        f"Ours: {seeds} seeds (model and test samples change with the seed), "
        f"{settings['sn_samples']} test samples per seed, {settings['num_subsets']} "
        f"subsets, {settings['epochs']} epochs, signed Pearson, removed pixels set "
        "to 0 (training mean), same baseline for IG, DeepLIFT and occlusion. "
        "Saliency is |gradient|.",
        "",
    ]
    verdicts, spreads = {}, {}
    for model_name, row in result["models"].items():
        n_values = row["n_values"]
        lines += method_table(model_name, row)
        signed = np.array([c for m, c in row["curves_mean"].items() if m != "saliency"])
        gradient_based = np.array([row["curves_mean"][m] for m in GRADIENT_BASED])
        spreads[model_name] = gradient_based.max(0) - gradient_based.min(0)
        # With Occlusion-1 (reported beside): at n = 1 it is exactly S_1.
        spread = signed.max(0) - signed.min(0)
        verdicts[model_name] = (spread[1], spread[-1])
        lines += [
            "",
            "Spread (max - min) between the four signed gradient-based methods "
            f"(the rule's): {spreads[model_name][1]:.3f} at n = {n_values[1]}, "
            f"{spreads[model_name][-1]:.3f} at n = {n_values[-1]} (largest over n "
            f"{spreads[model_name].max():.3f}); with Occlusion-1 too: "
            f"{spread[1]:.2f} at n = {n_values[1]}, {spread[-1]:.2f} at "
            f"n = {n_values[-1]}; saliency (|gradient|) lowest at every n: "
            f"{bool(np.all(np.array(row['curves_mean']['saliency']) < signed.min(0)))}."
            " Occlusion-1 at n = 1: "
            f"{row['curves_mean']['occlusion-1'][0]:.3f}. Largest relative "
            "difference |epsilon-LRP - gradient*input| / max|gradient*input|: "
            f"{row['lrp_vs_gradient_x_input_max_relative_difference']:.1e}.",
            "",
            figure(
                outputs,
                docs,
                f"compare_attributions/sensitivity_n_{model_name}.png",
                f"compare_sensitivity_n_{model_name}.png",
                f"Sensitivity-n of the six methods, {model_name}, mean over seeds.",
            ),
        ]
    simple = "mnist_mlp"
    agree = bool(np.all(spreads[simple] <= 0.05)) if simple in spreads else False
    diverge = {
        name: bool(spread[-1] - spread[1] > 0.05)
        for name, spread in spreads.items()
        if name != simple
    }
    verdict = (
        "reproduced"
        if agree and diverge and all(diverge.values())
        else "partly"
        if agree and any(diverge.values())
        else "not reproduced"
    )
    lines += [
        "Issue's summary of the findings: methods agree on simple models and "
        "diverge for larger n. Rule (docs/VERDICT_RULES.md, issue 20, written "
        "before this rerun): the four signed gradient-based methods "
        "(gradient*input, integrated gradients, epsilon-LRP, DeepLIFT-Rescale; "
        "Occlusion-1 is near 1 at small n by construction, saliency is unsigned) "
        f"agree on {simple} if their spread is at most 0.05 at every n "
        f"(largest: {spreads[simple].max():.3f}, so "
        f"{'they agree' if agree else 'they do not'}); they diverge with n on a "
        "model if the spread at the largest n exceeds that at the second n by "
        "more than 0.05: "
        + "; ".join(
            f"{name} {spreads[name][1]:.3f} -> {spreads[name][-1]:.3f} "
            f"({'diverge' if d else 'do not diverge'})"
            for name, d in diverge.items()
        )
        + f". **Verdict: {verdict}.** Beyond the issue's summary: epsilon-LRP "
        "matches gradient*input on these ReLU networks (relative differences "
        "above), as Ancona et al. prove, and saliency (|gradient|, sign "
        "dropped) correlates worst. With Occlusion-1 included the spread "
        "(second n / largest n) is "
        + "; ".join(f"{k} {a:.2f} / {b:.2f}" for k, (a, b) in verdicts.items())
        + ": what differs from the gradient-based methods is Occlusion-1, whose "
        "curve falls with n on the CNNs.",
        "",
        figure(
            outputs,
            docs,
            "compare_attributions/maps_cifar_cnn.png",
            "compare_maps_cifar_cnn.png",
            "Maps of the six methods, CIFAR CNN.",
        ),
    ]
    row = (
        "| 4. Attribution methods agree on simple models, diverge with n (Ancona "
        "et al.) | agree on simple models | spread of the four signed "
        "gradient-based methods, second n / largest n: "
        + "; ".join(f"{k} {v[1]:.3f} / {v[-1]:.3f}" for k, v in spreads.items())
        + f" | {verdict} |"
    )
    return Section("\n".join(lines), [row])


def section_tanh(result, outputs, docs) -> Section:
    settings = result["settings"]
    relu, tanh = result["models"]["mnist_mlp"], result["models"]["mnist_mlp_tanh"]
    n_values = tanh["n_values"]

    def curve(row, method):
        return np.array(row["curves_mean"][method])

    def spread(row, method):
        return np.array(row["curves_std"][method] or [0.0] * len(n_values))

    key = "lrp_vs_gradient_x_input_max_relative_difference"
    ratio = tanh[key] / max(relu[key], 1e-12)
    apart = np.abs(curve(tanh, "epsilon-LRP") - curve(tanh, "gradient*input")) > (
        np.maximum(spread(tanh, "epsilon-LRP"), spread(tanh, "gradient*input"))
    )
    f1 = (
        "reproduced"
        if ratio >= 10 and apart.any()
        else "partly"
        if ratio >= 10
        else "not reproduced"
    )
    leader, last = (
        {
            name: max(row["curves_mean"], key=lambda m: row["curves_mean"][m][i])
            for name, row in result["models"].items()
        }
        for i in (1, -1)
    )
    f2 = "reproduced" if leader["mnist_mlp_tanh"] == "occlusion-1" else "not reproduced"
    gradient_based = ("gradient*input", "integrated gradients", "epsilon-LRP")
    distance = {
        name: {
            m: float(np.mean(np.abs(curve(row, m) - curve(row, "occlusion-1"))))
            for m in (*gradient_based, "DeepLIFT-Rescale")
        }
        for name, row in result["models"].items()
    }
    closest = {name: min(d, key=d.get) for name, d in distance.items()}
    f3 = "reproduced" if closest["mnist_mlp_tanh"] == "gradient*input" else "not"
    f3 += "" if f3 == "reproduced" else " reproduced"
    ig_dl = {
        name: float(
            np.max(
                np.abs(
                    curve(row, "integrated gradients") - curve(row, "DeepLIFT-Rescale")
                )
            )
        )
        for name, row in result["models"].items()
    }
    close = [v <= 0.05 for v in ig_dl.values()]
    f4 = "reproduced" if all(close) else "partly" if any(close) else "not reproduced"
    lines = [
        "## 4b. Ancona et al.'s own model: the Tanh MLP and its ReLU twin",
        "",
        "The shared notes on Ancona et al. (2018) confirm one model of the paper "
        "by name, an MNIST MLP with Tanh units, and four findings we can test: "
        "(F1) epsilon-LRP equals gradient*input on ReLU networks and not "
        "otherwise; (F2) Occlusion-1 is best at small n; (F3) on the Tanh MLP "
        "gradient*input follows Occlusion-1 more closely than the other "
        "gradient-based methods; (F4) integrated gradients and DeepLIFT-Rescale "
        "give very similar results. Layer sizes and training are not known.",
        "",
        "Ours: `experiments/compare_attributions.py --models mnist_mlp mnist_mlp_tanh` "
        "(Dense 256-256 with Tanh, and the same with ReLU: same seeds, data and "
        f"training), {settings['train_size'] or 4000} training digits, "
        f"{settings['epochs']} epochs, {len(settings['seeds'])} seeds, "
        f"{settings['sn_samples']} test samples per seed, "
        f"{settings['num_subsets']} subsets, signed Pearson, removed pixels set "
        "to 0 (the training mean; also the baseline of IG, DeepLIFT, occlusion).",
        "",
    ]
    for name, row in result["models"].items():
        lines += [
            *method_table(name, row),
            "",
            figure(
                outputs,
                docs,
                f"ancona_tanh/sensitivity_n_{name}.png",
                f"tanh_sensitivity_n_{name}.png",
                f"Sensitivity-n of the six methods, {name}, mean over seeds.",
            ),
        ]
    lines += [
        "What differs (rules in docs/VERDICT_RULES.md, written before the run):",
        "",
        f"- F1: largest relative difference |epsilon-LRP - gradient*input| / "
        f"max|gradient*input|: {tanh[key]:.1e} on Tanh, {relu[key]:.1e} on ReLU "
        f"({ratio:.0f}x); their mean curves on Tanh differ by more than a seed "
        f"std at n = {[n for n, a in zip(n_values, apart, strict=True) if a]}. "
        f"**F1: {f1}.**",
        f"- F2: method with the highest correlation at n = {n_values[1]}: "
        + ", ".join(f"{k} {v}" for k, v in leader.items())
        + f". **F2: {f2}.** At the largest n ({n_values[-1]}) the leader is "
        + ", ".join(f"{k} {v}" for k, v in last.items())
        + "; saliency (|gradient|) mean correlation over n: "
        + ", ".join(
            f"{k} {np.mean(row['curves_mean']['saliency']):.2f}"
            for k, row in result["models"].items()
        )
        + ".",
        "- F3: mean over n of |curve - Occlusion-1 curve|: "
        + "; ".join(
            f"{name}: " + ", ".join(f"{m} {v:.3f}" for m, v in d.items())
            for name, d in distance.items()
        )
        + f". **F3: {f3}.**",
        "- F4: largest gap between the integrated-gradients and DeepLIFT-Rescale "
        "curves: "
        + ", ".join(f"{k} {v:.3f}" for k, v in ig_dl.items())
        + f" (the three models of section 4 are not part of this run). "
        f"**F4: {f4}.**",
        "",
        figure(
            outputs,
            docs,
            "ancona_tanh/maps_mnist_mlp_tanh.png",
            "tanh_maps.png",
            "Maps of the six methods, Tanh MLP, first seed.",
        ),
    ]
    rows = [
        "| 4b. eps-LRP = gradient*input on ReLU only (Ancona et al.) | equal on "
        f"ReLU, differ on Tanh | relative difference {tanh[key]:.1e} Tanh vs "
        f"{relu[key]:.1e} ReLU | {f1} |",
        "| 4c. Occlusion-1 leads at small n; grad*input follows it on the Tanh MLP "
        f"| both | leader at n = {n_values[1]}: {leader['mnist_mlp_tanh']}; closest "
        f"to Occlusion-1: {closest['mnist_mlp_tanh']} | F2 {f2}; F3 {f3} |",
        "| 4d. IG and DeepLIFT-Rescale very similar (Ancona et al.) | very highly "
        "correlated | largest curve gap "
        + ", ".join(f"{k} {v:.3f}" for k, v in ig_dl.items())
        + f" | {f4} |",
    ]
    return Section("\n".join(lines), rows)


def section_localisation(result, outputs, docs) -> Section:
    s = result["summary"]
    settings = result["settings"]
    methods = [k for k in next(iter(s.values())) if k != "test_accuracy"]
    seeds = len(settings["seeds"])
    lines = [
        "## 5. Beyond the papers: localisation on cluttered MNIST",
        "",
        f"56x56 canvases, one real digit, four fragments of other digits and noise; "
        f"{settings['train_size']} training / {settings['test_size']} test canvases, "
        f"{settings['epochs']} epochs, BatchNorm CNN, alpha = {settings['alpha']}, "
        f"FBI lambda = {settings['lam']}; {seeds} seeds, mean ± std. "
        "Chance level (uniform map) of the mass in box: "
        f"{result['chance_mass_in_box']:.3f}. No paper measured this.",
        "",
        "| model | test accuracy | "
        + " | ".join(f"{m}: mass in box | {m}: pointing game" for m in methods)
        + " |",
        "| --- " * (2 + 2 * len(methods)) + "|",
    ]
    for name, row in s.items():
        lines.append(
            f"| {name} | {pm(row['test_accuracy'])} | "
            + " | ".join(
                f"{pm(row[m]['mass_in_box'])} | {pm(row[m]['pointing_game'])}"
                for m in methods
            )
            + " |"
        )
    if "fbi" in result["per_seed"]:
        below = [r["test_accuracy"] <= 0.70 for r in result["per_seed"]["fbi"]]
        lines += [
            "",
            f"The FBI loss switches on once validation accuracy exceeds 0.70; the "
            f"FBI model's final validation accuracy stayed at or below 0.70 in "
            f"{sum(below)}/{len(below)} seeds, so in those runs the FBI loss was "
            "most likely never on and the FBI row is a second baseline (the "
            "run log shows the validation accuracy of every epoch)."
            if any(below)
            else "The FBI loss switched on in every seed (validation accuracy "
            "above 0.70).",
        ]
    lines += [
        "",
        figure(
            outputs,
            docs,
            "localisation/maps_vanilla_gradient.png",
            "localisation_maps.png",
            "Vanilla-gradient maps of the three models, first seed.",
        ),
    ]
    gradient = "vanilla gradient"
    row = (
        "| 5. Mass of the vanilla gradient inside the digit's box (new) | (not "
        "measured) | "
        + ", ".join(
            f"{name} {s[name][gradient]['mass_in_box']['mean']:.3f}" for name in s
        )
        + f" (chance {result['chance_mass_in_box']:.3f}) | - |"
    )
    return Section("\n".join(lines), [row])


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


def section_text(result, outputs, docs) -> Section:
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


def section_lazy(result, outputs, docs) -> Section:
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


DECOY_PENALTIES = {
    "rrr": "RRR (`RRRPenalty`)",
    "masked_gradient": "masked L1 gradient (`MaskedGradientPenalty`)",
    "masked_relevance": "masked eps-LRP relevance (`MaskedRelevancePenalty`)",
    "expected_gradients": "expected gradients (`ExpectedGradientsPenalty`)",
}
DECOY_LABELS = {
    "baseline": "baseline (no mask)",
    "clean_reference": "reference: trained on MNIST without the decoy",
}
DECOY_MODELS = {"mlp": "MLP (Ross et al., 2 x 50 ReLU)", "cnn": "small CNN"}
DECOY_GOAL = 0.97
DECOY_COLLAPSE = 0.90


def decoy_verdict(runs: dict, amended: bool = True) -> tuple[str, dict]:
    """The Decoy MNIST verdict of one model (docs/VERDICT_RULES.md, issue 19).

    Returns `(verdict, per_penalty)`: "reproduced" / "partly" / "not
    reproduced", or "no shortcut to fix" when the baseline does not collapse;
    `per_penalty[name]` is "fixes" / "partly fixes" / "does not fix".
    `amended=False` applies the collapse rule as first written (decoy test
    accuracy at least 0.10 below clean test accuracy).
    """
    base = runs["baseline"]
    decoy = base["decoy_test_accuracy"]["mean"]
    if amended:
        collapsed = decoy < DECOY_COLLAPSE
    else:
        collapsed = decoy <= base["clean_test_accuracy"]["mean"] - 0.10
    per_penalty = {}
    for name in DECOY_PENALTIES:
        if name not in runs:
            continue
        up = (
            change(runs[name]["decoy_test_accuracy"], base["decoy_test_accuracy"])[1]
            == "clearly up"
        )
        reached = runs[name]["decoy_test_accuracy"]["mean"] >= DECOY_GOAL
        per_penalty[name] = (
            "fixes" if up and reached else "partly fixes" if up else "does not fix"
        )
    if not collapsed:
        return "no shortcut to fix", per_penalty
    headline = [per_penalty.get(n) for n in ("rrr", "masked_gradient")]
    if all(v == "fixes" for v in headline):
        return "reproduced", per_penalty
    if any(v in ("fixes", "partly fixes") for v in headline):
        return "partly", per_penalty
    return "not reproduced", per_penalty


def decoy_reading(runs: dict) -> list[str]:
    """Bullets that read one model's table: the clean digits, the reference,
    what the swatch alone does, the cost in training time."""
    base = runs["baseline"]
    fixed = [name for name in DECOY_PENALTIES if name in runs]
    lines = [
        f"- Clean digits: the baseline scores "
        f"{base['clean_test_accuracy']['mean']:.3f} on them, "
        + (
            "below its decoy test accuracy: without a swatch it fails too, "
            "consistent with a blank corner being read as a shade no training "
            "class had."
            if base["clean_test_accuracy"]["mean"] < base["decoy_test_accuracy"]["mean"]
            else "about its decoy test accuracy or above."
        ),
        "- The swatch alone (blank image, training-rule swatch) gives the class "
        f"for {base['swatch_only_accuracy']['mean']:.3f} of the baseline's "
        "predictions (chance 0.1); for the penalised models: "
        + ", ".join(
            f"{name} {runs[name]['swatch_only_accuracy']['mean']:.3f}" for name in fixed
        )
        + ".",
    ]
    reference = runs.get("clean_reference")
    if reference:

        def against(key):
            return ", ".join(
                f"{name} {change(runs[name][key], reference[key])[1]}" for name in fixed
            )

        lines.append(
            "- Against the same model trained without the decoy (reference: clean "
            f"test {pm(reference['clean_test_accuracy'], 4)}, decoy test "
            f"{pm(reference['decoy_test_accuracy'], 4)}), the penalised models' "
            f"clean test accuracy is {against('clean_test_accuracy')}; their decoy "
            f"test accuracy {against('decoy_test_accuracy')} (the reference never "
            "saw a swatch)."
        )
    seconds = base["train_seconds"]["mean"]
    if seconds > 0:
        lines.append(
            "- Training time against the baseline's (`fit` wall time, indicative: "
            "other jobs shared the machine): "
            + ", ".join(
                f"{name} {runs[name]['train_seconds']['mean'] / seconds:.2f}x"
                for name in fixed
            )
            + "."
        )
    return lines


def decoy_comparison(mlp: dict, cnn: dict) -> list[str]:
    """How far each model falls for the decoy, and what the measurements say
    of why (the mechanism itself is not tested)."""
    a, b = mlp["baseline"], cnn["baseline"]

    def fall(runs):
        ref = runs.get("clean_reference")
        return (ref or runs["baseline"])["clean_test_accuracy"]["mean"] - runs[
            "baseline"
        ]["decoy_test_accuracy"]["mean"]

    return [
        "### MLP against CNN",
        "",
        f"- Fall on the decoy test set (clean-trained reference's clean accuracy "
        f"minus the baseline's decoy accuracy): MLP {fall(mlp):.3f}, CNN "
        f"{fall(cnn):.3f}.",
        "- The swatch alone gives the class for "
        f"{a['swatch_only_accuracy']['mean']:.3f} of the MLP baseline's "
        f"predictions and {b['swatch_only_accuracy']['mean']:.3f} of the CNN "
        "baseline's (chance 0.1); share of |gradient x input| on the swatch: MLP "
        f"{a['wrong_reason_gradient_x_input']['mean']:.3f}, CNN "
        f"{b['wrong_reason_gradient_x_input']['mean']:.3f}; of |gradient|: MLP "
        f"{a['wrong_reason_saliency']['mean']:.3f}, CNN "
        f"{b['wrong_reason_saliency']['mean']:.3f}.",
        "- Reading (a hypothesis these runs do not test): the MLP gets each "
        "swatch pixel as an input of its own, whose grey level is linear in the "
        "label, so one weight per pixel reads the class; the CNN sees the swatch "
        "through 3 x 3 filters shared with the digit's strokes and two poolings, "
        "and fits the training digits from their shapes first, which would leave "
        "the swatch a secondary cue.",
    ]


def section_decoy(result, outputs, docs) -> Section:
    settings = result["settings"]
    models = [m for m in DECOY_MODELS if m in result]
    seeds = len(settings["seeds"])
    lines = [
        "## 8. Decoy MNIST: annotation masks against a learned shortcut (issue 19)",
        "",
        'Ross, Hughes and Doshi-Velez (IJCAI 2017, "Right for the Right Reasons") '
        "put a 4 x 4 swatch in a random corner of each MNIST digit, whose grey level "
        "gives the class away in training (255 - 25 y) and is that of a random class "
        "at test time (`kar.datasets.make_decoy_mnist`). A model trained on it learns "
        "the swatch; trained with the swatch as annotation mask (`fit(x, y, "
        "annotation_mask=...)`, [docs/masks.md](masks.md)) it should not. Published: "
        "Rieger et al. (ICML 2020, CDEP) report about 0.60 test accuracy for the "
        "vanilla model and about 0.99 for RRR on Decoy MNIST (as issue 19 quotes "
        "them; the paper itself, its model and its training were not at hand "
        "here).",
        "",
        f"Setting: all {settings['train_size']:,} training digits, "
        f"{settings['epochs']} epochs, Adam 1e-3, batch {settings['batch_size']}, "
        f"inputs pixel / 255, {seeds} seeds (same initial weights and data order per "
        "seed across penalties). Each penalty's coefficient was chosen per model "
        "before the main runs on 5,000 held-out training digits with random shades "
        "(never the test set), seed 0, from a grid of three (best validation "
        "accuracy; within 0.002 the smaller). Decoy test: the 10,000 MNIST test "
        "digits with random-class swatches; clean: the same digits without swatch; "
        "swatch only: the training rule's swatch on a blank image (1.0: the swatch "
        "alone gives the class). Wrong-reason score: share of |vanilla gradient| "
        "(and of |gradient x input|) on the swatch over the decoy test set "
        "(`kar.evaluation.wrong_reason_score`; chance, an even spread: 16 / 784 = "
        "0.020). Rules: docs/VERDICT_RULES.md (issue 19), written before the runs; "
        "the collapse rule was amended after the first baseline run (dated there), "
        "and both verdicts are given. The headline (README) verdict is the MLP's.",
        "",
    ]
    cells, verdicts = [], []
    for model in models:
        runs = result[model]["runs"]
        chosen = result[model]["chosen"]
        base = runs["baseline"]
        verdict, per_penalty = decoy_verdict(runs)
        original, _ = decoy_verdict(runs, amended=False)
        lines += [
            f"### {DECOY_MODELS[model]}",
            "",
            "| training | coefficient | decoy test acc. | clean test acc. | "
            "swatch-only acc. | wrong reason (gradient) | wrong reason (grad x input) "
            "| train s per run | verdict |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name in ["baseline", *DECOY_PENALTIES, "clean_reference"]:
            if name not in runs:
                continue
            row = runs[name]
            coefficient = (
                f"{chosen[name]['argument']} = {chosen[name]['coefficient']:g}"
                if name in chosen
                else "-"
            )
            label = DECOY_LABELS.get(name, DECOY_PENALTIES.get(name))
            lines.append(
                f"| {label} | {coefficient} "
                f"| {pm(row['decoy_test_accuracy'], 4)}"
                f"{arrow(row['decoy_test_accuracy'], base['decoy_test_accuracy'])} "
                f"| {pm(row['clean_test_accuracy'], 4)}"
                f"{arrow(row['clean_test_accuracy'], base['clean_test_accuracy'])} "
                f"| {pm(row['swatch_only_accuracy'], 3)} "
                f"| {pm(row['wrong_reason_saliency'], 3)}"
                f"{arrow(row['wrong_reason_saliency'], base['wrong_reason_saliency'])} "
                f"| {pm(row['wrong_reason_gradient_x_input'], 3)} "
                f"| {row['train_seconds']['mean']:.0f} "
                f"| {per_penalty.get(name, '-')} |"
            )
        grids = "; ".join(
            f"{name} {c['argument']}: "
            + ", ".join(f"{k} -> {v:.4f}" for k, v in c["grid"].items())
            for name, c in chosen.items()
        )
        lines += [
            "",
            f"Arrows: clearly up / down against the baseline (|d| > the larger seed "
            f"std). Validation accuracy of the coefficient grid (held-out digits): "
            f"{grids}.",
            "",
            f"- **{DECOY_MODELS[model]}: {verdict}** (amended collapse rule: baseline "
            f"decoy test accuracy {base['decoy_test_accuracy']['mean']:.4f}, per seed "
            + ", ".join(f"{v:.4f}" for v in base["decoy_test_accuracy"]["values"])
            + " "
            f"{'<' if base['decoy_test_accuracy']['mean'] < DECOY_COLLAPSE else '>='} "
            f"{DECOY_COLLAPSE}); under the rule as first written: {original}.",
            *decoy_reading(runs),
            "",
            figure(
                outputs,
                docs,
                f"decoy_mnist/maps_{model}.png",
                f"decoy_maps_{model}.png",
                f"Decoy MNIST, {DECOY_MODELS[model]}, seed 0: vanilla-gradient maps of "
                "the baseline and each penalty on six decoy test digits",
            ),
            figure(
                outputs,
                docs,
                f"decoy_mnist/wrong_reason_{model}.png",
                f"decoy_wrong_reason_{model}.png",
                f"Decoy MNIST, {DECOY_MODELS[model]}, seed 0: share of |vanilla "
                "gradient| on the swatch, per class",
            ),
        ]
        cells.append(
            f"{DECOY_MODELS[model]}: baseline "
            f"{base['decoy_test_accuracy']['mean']:.3f}, "
            + ", ".join(
                f"{name} {runs[name]['decoy_test_accuracy']['mean']:.3f}"
                for name in DECOY_PENALTIES
                if name in runs
            )
            + f" ({verdict})"
        )
        verdicts.append(verdict)
    if "mlp" in result and "cnn" in result:
        lines += ["", *decoy_comparison(result["mlp"]["runs"], result["cnn"]["runs"])]
    summary_rows = [
        "| 8. Decoy MNIST: annotation masks undo a learned shortcut (Ross et al. "
        "2017; issue 19) | vanilla ~0.60, RRR ~0.99 (Rieger et al. 2020) | "
        f"decoy test accuracy, {seeds} seeds: "
        + "; ".join(cells)
        + f" | {verdicts[0]} |"
    ]
    return Section("\n".join(lines), summary_rows)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment: its script, extra arguments and report section.

    Attributes:
        name: its folder under the output directory and its section's key.
        script: the script in experiments/.
        section: `(result, outputs, docs) -> Section`, from `results.json`.
        args: arguments beyond `--output-dir` (CPU-size defaults otherwise).
    """

    name: str
    script: str
    section: Callable[[dict, pathlib.Path, pathlib.Path], Section]
    args: tuple[str, ...] = ()

    def command(self) -> str:
        script = f"python experiments/{self.script}"
        return " ".join([script, "--output-dir", f"outputs/{self.name}", *self.args])


EXPERIMENTS = [
    Experiment("bn_noise", "bn_noise.py", section_bn_noise),
    Experiment(
        "l1_alpha_sweep",
        "l1_alpha_sweep.py",
        section_l1_sweep,
        ("--alphas", "0", "1e-4", "1e-3", "--seeds", "0", "1", "2", "3", "4"),
    ),
    Experiment(
        "l1_lr_schedule",
        "l1_alpha_sweep.py",
        section_l1_schedule,
        ("--lr-schedule", "constant", "--alphas", "0", "1e-3"),
    ),
    Experiment(
        "fbi_lambda_sweep", "fbi_lambda_sweep.py", section_fbi_sweep, ("--box-seeds",)
    ),
    Experiment("fbi_readings", "fbi_readings.py", section_fbi_readings),
    Experiment("compare_attributions", "compare_attributions.py", section_compare),
    Experiment(
        "ancona_tanh",
        "compare_attributions.py",
        section_tanh,
        ("--models", "mnist_mlp", "mnist_mlp_tanh"),
    ),
    Experiment("localisation", "localisation.py", section_localisation),
    Experiment("text_imdb", "text_imdb.py", section_text),
    Experiment("lazy_regularization", "lazy_regularization.py", section_lazy),
    Experiment(
        "lazy_regularization_cifar10",
        "lazy_regularization.py",
        section_lazy,
        ("--dataset", "cifar10"),
    ),
    Experiment("decoy_mnist", "decoy_mnist.py", section_decoy),
    Experiment("faithfulness_rejudge", "faithfulness_rejudge.py", section_faithfulness),
]
NAMES = [e.name for e in EXPERIMENTS]


def run_experiments(args, outputs: pathlib.Path) -> None:
    timings_file = outputs / "timings.json"
    timings = load(timings_file) or {}
    extra = ["--data-dir", args.data_dir] if args.data_dir else []
    if args.seeds:
        extra += ["--seeds", *map(str, args.seeds)]
    if args.quick:
        extra.append("--quick")
    for experiment in EXPERIMENTS:
        if args.only and experiment.name not in args.only:
            continue
        print(f"=== {experiment.name}: {experiment.command()}", flush=True)
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                str(EXPERIMENTS_DIR / experiment.script),
                "--output-dir",
                str(outputs / experiment.name),
                *experiment.args,
                *extra,
            ],
            check=True,
            cwd=EXPERIMENTS_DIR,
        )
        seconds = time.perf_counter() - start
        # A rerun only does what is left (finished runs are skipped), so the
        # wall time of the outputs is the sum over invocations.
        timing = timings.setdefault(
            experiment.name, {"seconds": 0.0, "load_average_1min_at_end": []}
        )
        timing["seconds"] += seconds
        timing["load_average_1min_at_end"].append(os.getloadavg()[0])
        print(f"=== {experiment.name} done in {seconds / 60:.1f} min", flush=True)
        timings_file.write_text(json.dumps(timings, indent=2))


SECTION = re.compile(
    r"<!-- section:(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /section:(?P=name) -->",
    re.S,
)
META = re.compile(r"^<!-- (?P<kind>wall|summary): (?P<row>\|.*\|) -->$", re.M)


def block(experiment: Experiment, section: Section, wall: str) -> str:
    """A section with its markers and its rows of the two report tables."""
    meta = [f"<!-- wall: | {experiment.name} | `{experiment.command()}` | {wall} | -->"]
    meta += [f"<!-- summary: {row} -->" for row in section.summary]
    return (
        f"<!-- section:{experiment.name} -->\n"
        + "\n".join(meta)
        + f"\n\n{section.text.rstrip()}\n\n<!-- /section:{experiment.name} -->"
    )


def wall_time(name: str, result: dict, timings: dict) -> str:
    timing = timings.get(name)
    if timing and timing.get("how"):  # not timed by this runner: says how
        return f"{timing['seconds'] / 60:.1f} min: {timing['how']}"
    if timing:
        loads = timing["load_average_1min_at_end"]
        return (
            f"{timing['seconds'] / 60:.1f} min in {len(loads)} invocation(s) "
            f"(load average {', '.join(f'{x:.1f}' for x in loads)} at their ends)"
            + (f"; {timing['note']}" if timing.get("note") else "")
        )
    if result.get("seconds"):
        return f"{result['seconds'] / 60:.1f} min (last invocation of the script)"
    return "not recorded"


def replace_between(text: str, start: str, end: str, body: str) -> str:
    """`text` with what lies between the markers `start` and `end` replaced.

    Raises:
        ValueError: if either marker is missing.
    """
    head, found, rest = text.partition(start)
    if not found or end not in rest:
        raise ValueError(
            f"Invalid value for argument text: expected the markers {start!r} and "
            f"{end!r}. Received: text without them"
        )
    return f"{head}{start}\n{body.strip()}\n{end}{rest.partition(end)[2]}"


def summary_table(report: str) -> str:
    """The summary table of a report: one row per verdict of its sections."""
    rows = [m["row"] for m in META.finditer(report) if m["kind"] == "summary"]
    return "\n".join([SUMMARY_HEADER, *rows])


def write_report(outputs: pathlib.Path, docs: pathlib.Path) -> str:
    """Writes `docs/RESULTS.md` and returns its text."""
    target = docs / "RESULTS.md"
    previous = (
        {m["name"]: m[0] for m in SECTION.finditer(target.read_text())}
        if target.exists()
        else {}
    )
    timings = load(outputs / "timings.json") or {}
    blocks = []
    for experiment in EXPERIMENTS:
        result = load(outputs / experiment.name / "results.json")
        if result:
            section = experiment.section(result, outputs, docs)
            blocks.append(
                block(experiment, section, wall_time(experiment.name, result, timings))
            )
        elif experiment.name in previous:
            blocks.append(previous[experiment.name])
        else:
            text = f"## {experiment.name}\n\nNot run yet: no results in `outputs/`."
            blocks.append(block(experiment, Section(text, []), "not run"))
    body = "\n\n".join(blocks)
    walls = [m["row"] for m in META.finditer(body) if m["kind"] == "wall"]
    text = "\n".join(
        [
            "# Reproducing the three papers with keras-attreg",
            "",
            "Generated by `python experiments/reproduce_all.py` from the outputs of "
            "the commands below (`--report-only` rebuilds it from `outputs/`; a "
            "section whose outputs are absent is kept from the previous version "
            "of this file). Every number is from our own runs at CPU size on "
            f"{platform.machine()} with {os.cpu_count()} CPU cores shared with "
            "other jobs (the load average is given with each wall time), no GPU: "
            "smaller networks, data subsets and fewer epochs than the papers. A "
            "claim is compared only in its direction where the setting differs; "
            "nothing was tuned to agree. The verdict rules of sections 2, 2c, 3, "
            "3c, 4, 4b, 6, 7 and 8 are in `docs/VERDICT_RULES.md`, written before "
            "their runs.",
            "",
            "| experiment | command (CPU-size defaults) | wall time |",
            "| --- | --- | --- |",
            *walls,
            "",
            "Set `KERAS_ATTREG_DATA` (or pass `--data-dir DIR`) when the data is "
            "not in `../shared/data`. Full-size settings: see each script's "
            "docstring.",
            "",
            "## Summary",
            "",
            summary_table(body),
            "",
            "## Changes to the report",
            "",
            *(f"- {entry}" for entry in CHANGES),
            "",
            body,
            "",
        ]
    )
    docs.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    print(f"wrote {target}")
    return text


def update_readme(readme: pathlib.Path, report: str) -> None:
    """Writes the report's summary table between the README's results markers."""
    text = readme.read_text() if readme.exists() else ""
    if README_START not in text:
        print(f"{readme} has no {README_START} marker: README not updated")
        return
    readme.write_text(
        replace_between(text, README_START, README_END, summary_table(report))
    )
    print(f"wrote the results table of {readme}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="passed to every script")
    parser.add_argument("--output-dir", default=None, help="default: outputs/")
    parser.add_argument("--docs-dir", default=None, help="default: docs/")
    parser.add_argument("--readme", default=None, help="default: README.md")
    parser.add_argument(
        "--seeds", type=int, nargs="+", help="passed to every script (default: theirs)"
    )
    parser.add_argument("--only", nargs="+", choices=NAMES)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--runs-only", action="store_true", help="no report")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="every script on a tiny slice; outputs, report and README copy "
        "under outputs/quick/",
    )
    args = parser.parse_args()
    base = ROOT / "outputs" / "quick" if args.quick else ROOT
    outputs = pathlib.Path(args.output_dir or base / "outputs").resolve()
    docs = pathlib.Path(args.docs_dir or base / "docs")
    readme = pathlib.Path(args.readme or base / "README.md")
    outputs.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        run_experiments(args, outputs)
    if not args.runs_only:
        update_readme(readme, write_report(outputs, docs))


if __name__ == "__main__":
    main()
