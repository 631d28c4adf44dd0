"""Experiment 3b: the FBI readings the paper leaves open (issue 20, finding 5).

Yoo et al. (2019) leave open how Eq. 3's L1 is reduced, which layers K
counts, whether the maps are compared raw, the input scale and where the
relevance pass starts. Section 3's sweep uses one reading (`default`: mean
over the units, K = the layers with a kernel, raw maps, standardised
inputs, relevance from the true-class logit); under it the activation max
falls steadily with lambda. This script trains `fbi_lambda_sweep.py`'s
network in each other reading at lambda in {0.001, 0.01, 0.1}, seeds 0 1 2:

- `sum`: the L1 summed over the units (`FBILoss(reduction="sum")`);
- `pooling_in_k`: pooling layers counted in K (`layers="kernel_and_pooling"`);
- `normalised`: each map divided by its own L1 norm (`normalize=True`);
- `unit_inputs`: pixels in [0, 1];
- `all_outputs`: the relevance pass started from every logit (`start="all"`).

Per run, Table 1 of every conv layer (max, the skewness readings of
docs/fbi.md, the share of zero activations) on 500 test digits, test
accuracy, L_FBI in the run's own reading. Sensitivity-n and the box part of
section 3 are left out (the readings are about Table 1). Every reading has
its own lambda = 0 runs (plain training, the same initial weights and data
order per seed), so that L_FBI of the baseline is measured in the reading's
own loss. The runs go seed
by seed over every reading, so a stopped invocation leaves whole seeds;
each finished run is skipped on restart (`<output-dir>/<reading>/runs/`).

    python experiments/fbi_readings.py --output-dir outputs/fbi_readings
    python experiments/fbi_readings.py --output-dir outputs/fbi_quick --quick
"""

from __future__ import annotations

import argparse
import time

from _common import cached, output_dir, write_json
from _report import VERDICT_ORDER, Section, arrow, pm
from fbi_lambda_sweep import (
    SKEWNESS,
    fbi_judgements,
    mnist_run,
    run_name,
    settings,
    summarise,
    test_data,
)

READINGS = {
    "default": {},
    "sum": {"reduction": "sum"},
    "pooling_in_k": {"layers": "kernel_and_pooling"},
    "normalised": {"normalize": True},
    "unit_inputs": {"inputs": "unit"},
    "all_outputs": {"start": "all"},
}
"""Each reading's flags of `fbi_lambda_sweep.py`, against `default`."""

LAMBDAS = (1e-3, 1e-2, 0.1)


def reading_args(args: argparse.Namespace, reading: str) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **READINGS[reading]})


def main() -> None:
    args = settings()
    if not args.quick:
        args.sn_samples, args.box_seeds = 0, []
    readings = list(READINGS)
    folder = output_dir(args.output_dir)
    start = time.perf_counter()
    data = {
        inputs: test_data(reading_args(args, r))
        for r, inputs in (("default", "standardised"), ("unit_inputs", "unit"))
    }
    runs = {reading: [] for reading in readings}
    lams = [lam for lam in (args.lams if args.quick else LAMBDAS) if lam > 0]
    for seed in args.seeds:
        for reading in readings:
            settings_here = reading_args(args, reading)
            here = output_dir(folder / reading)
            for lam in [0.0, *lams]:
                runs[reading].append(
                    cached(
                        here / "runs" / f"{run_name(lam, seed)}.json",
                        lambda lam=lam, seed=seed, s=settings_here, h=here: mnist_run(
                            s, lam, seed, data[s.inputs], h
                        ),
                    )
                )
    summary = {}
    for reading in readings:
        summary[reading] = summarise(runs[reading], [])
    write_json(
        folder / "results.json",
        {
            "experiment": "fbi_readings",
            "settings": vars(args),
            "readings": READINGS,
            "runs": runs,
            "summary": summary,
            "train_seconds": sum(r["train_seconds"] for v in runs.values() for r in v),
            "seconds": time.perf_counter() - start,
        },
    )


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


def report(result, outputs, docs) -> Section:
    """Section 3c of docs/RESULTS.md (the FBI readings)."""
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


if __name__ == "__main__":
    main()
