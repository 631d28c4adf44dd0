"""What the experiments' report sections share: the `Section` each `report`
returns, reading a JSON, formatting a seed spread, copying a figure and the
change rules of docs/VERDICT_RULES.md (seed noise, paired-by-seed intervals).

Each experiment script's `report(result, outputs, docs) -> Section` writes its
part of docs/RESULTS.md from its `results.json`; `reproduce_all.py` calls them
and writes the report.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil

import numpy as np
import scipy.stats

VERDICT_ORDER = ("not reproduced", "partly", "reproduced")


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
