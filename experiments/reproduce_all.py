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
10. `transformer_faithfulness.py`: CP-LRP against gradient*input by
    Sensitivity-n on a text transformer and a tiny ViT (Ali et al. 2022;
    issue 22).
11. `transformer_fbi.py`: what FBI changes in the text transformer of 10
    (accuracy, L_FBI, CP-LRP's faithfulness; issue 22).

Adding an experiment: a script that writes `<output-dir>/results.json` and
has a `report(result, outputs, docs) -> Section` function (its section of the
report: the paper's numbers, the tables and the verdict; helpers in
`_report.py`), and one `Experiment` entry in `EXPERIMENTS`.

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
import subprocess
import sys
import time
from collections.abc import Callable

import bn_noise
import compare_attributions
import decoy_mnist
import faithfulness_rejudge
import fbi_lambda_sweep
import fbi_readings
import l1_alpha_sweep
import lazy_regularization
import localisation
import text_imdb
import transformer_faithfulness
import transformer_fbi
from _report import Section, load, wall_time

EXPERIMENTS_DIR = pathlib.Path(__file__).resolve().parent
ROOT = EXPERIMENTS_DIR.parent
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
SUMMARY_HEADER = (
    "| experiment | paper | ours (CPU size) | verdict |\n| --- | --- | --- | --- |"
)


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
    "2026-12-05, erratum (issue 22): the relevance pass doubled the relevance "
    "through layers that return their input (Dropout, Identity, augmentation "
    "layers at inference); fixed in commit 4ea8385. In this report only the "
    "FBI MNIST CNN has one (Dropout on its only path): its epsilon-LRP and "
    "DeepLIFT maps were exactly doubled (Sensitivity-n, deletion/insertion "
    "and ROAD unchanged: they are invariant to a constant factor), and the "
    "L_FBI values measured in inference mode (sections 3 and 3c, all "
    "readings but the normalised one) were 2.8% to 3.8% low on retrained "
    "models; no verdict or label changes. Sections 3 and 3c show the values "
    "of their last run until they are rerun with the fixed pass.",
)
"""Dated changes of rules and readings, newest last (issue 20: rules are
never silently rewritten after a run)."""


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment: its script's report section and extra arguments.

    Attributes:
        name: its folder under the output directory and its section's key.
        section: a script's `report(result, outputs, docs) -> Section`, from
            `results.json`; the experiment runs that script.
        args: arguments beyond `--output-dir` (CPU-size defaults otherwise).
    """

    name: str
    section: Callable[[dict, pathlib.Path, pathlib.Path], Section]
    args: tuple[str, ...] = ()

    @property
    def script(self) -> str:
        """The script in experiments/ that owns `section`."""
        return f"{self.section.__module__}.py"

    def command(self) -> str:
        script = f"python experiments/{self.script}"
        return " ".join([script, "--output-dir", f"outputs/{self.name}", *self.args])


EXPERIMENTS = [
    Experiment("bn_noise", bn_noise.report),
    Experiment(
        "l1_alpha_sweep",
        l1_alpha_sweep.report,
        ("--alphas", "0", "1e-4", "1e-3", "--seeds", "0", "1", "2", "3", "4"),
    ),
    Experiment(
        "l1_lr_schedule",
        l1_alpha_sweep.report_schedule,
        ("--lr-schedule", "constant", "--alphas", "0", "1e-3"),
    ),
    Experiment("fbi_lambda_sweep", fbi_lambda_sweep.report, ("--box-seeds",)),
    Experiment("fbi_readings", fbi_readings.report),
    Experiment("compare_attributions", compare_attributions.report),
    Experiment(
        "ancona_tanh",
        compare_attributions.report_tanh,
        ("--models", "mnist_mlp", "mnist_mlp_tanh"),
    ),
    Experiment("localisation", localisation.report),
    Experiment("text_imdb", text_imdb.report),
    Experiment("lazy_regularization", lazy_regularization.report),
    Experiment(
        "lazy_regularization_cifar10",
        lazy_regularization.report,
        ("--dataset", "cifar10"),
    ),
    Experiment("decoy_mnist", decoy_mnist.report),
    Experiment("faithfulness_rejudge", faithfulness_rejudge.report),
    Experiment("transformer_faithfulness", transformer_faithfulness.report),
    Experiment("transformer_fbi", transformer_fbi.report),
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
# Everything from this marker to the end of docs/RESULTS.md is written by hand
# (errata) and kept as it is by every rebuild.
HANDWRITTEN = "<!-- handwritten: kept as is by reproduce_all.py -->"
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
    old = target.read_text() if target.exists() else ""
    previous = {m["name"]: m[0] for m in SECTION.finditer(old)}
    kept = old[old.index(HANDWRITTEN) :] if HANDWRITTEN in old else ""
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
            "3c, 4, 4b, 6, 7, 7b, 8, 9, 10 and 11 are in `docs/VERDICT_RULES.md`, "
            "written before their runs.",
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
            *([kept] if kept else []),
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
